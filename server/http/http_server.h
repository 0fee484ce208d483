// An HTTP/1.1 server on Boost.Beast (asynchronous, a few I/O threads), with
// the limits a public listener needs: a bound on connections, on header and
// URI size and on body size (checked from Content-Length before the body is
// read), and timeouts for idle keep-alive connections, for a request's whole
// header (slowloris), for its body and for writing the answer. Optional TLS
// and mutual TLS from PEM contents. It knows nothing about inference: a
// HttpHandler routes and answers, possibly later and from another thread.
#ifndef GHOSTSERVE_SERVER_HTTP_HTTP_SERVER_H_
#define GHOSTSERVE_SERVER_HTTP_HTTP_SERVER_H_

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ghostserve::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using RequestHeader = boost::beast::http::request_header<>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using Status = boost::beast::http::status;

struct HttpServerOptions {
  // HOST:PORT ("[::1]:8000" for IPv6); port 0 picks a free port.
  std::string listen = "0.0.0.0:8000";
  int io_threads = 2;
  // Connections open at once; one more gets 503 and is closed.
  int max_connections = 1024;
  // Request line plus headers.
  uint32_t max_header_bytes = 16 << 10;
  uint32_t max_uri_bytes = 8 << 10;
  // Larger bodies get 413 before they are read.
  uint64_t max_body_bytes = 16 << 20;
  // Bytes of request bodies being received or handled at once, over all
  // connections: each request reserves its Content-Length (max_body_bytes
  // for a chunked body) before its body is read, until its answer is
  // written. Over the budget: 503 before the body is read.
  uint64_t max_buffered_bytes = 256 << 20;
  // A kept-alive connection with no new request for this long is closed.
  int idle_timeout_ms = 60'000;
  // A request's whole header must arrive within this, once its first byte
  // has (a client dribbling header bytes is cut off: 408).
  int header_timeout_ms = 10'000;
  // Its whole body, once the header is in.
  int body_timeout_ms = 60'000;
  // Writing one answer; also the TLS handshake.
  int write_timeout_ms = 30'000;
  // As ServerOptions: PEM contents; empty cert = plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string tls_client_ca_pem;
};

// Answers one request. Callable once, from any thread; after the server
// stops, the answer is dropped.
using Responder = std::function<void(Response)>;

class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // On an I/O thread, once a request's header is in and before its body is
  // read: a response here is sent without reading the body (and the
  // connection closes if a body was coming). For routing errors, methods,
  // authentication and per-route body limits.
  // `peer` names the client as gRPC does ("ipv4:127.0.0.1:5678").
  virtual std::optional<Response> CheckHeader(const RequestHeader& header,
                                              const std::string& peer) = 0;
  // On an I/O thread with the whole request (the handler may move from it).
  // Must not block; answers through `respond` exactly once.
  virtual void Handle(std::shared_ptr<Request> request, const std::string& peer,
                      Responder respond) = 0;
};

// A response with `body` and `content_type`; Content-Length is set when sent.
Response MakeResponse(Status status, std::string body, std::string_view content_type);
// The JSON error body every endpoint uses: {"error": "<message>"}.
Response ErrorResponse(Status status, std::string_view message);

// Thread-safe. Stop (or destruction) closes the listener and every
// connection; answers the handler has not given by then are dropped.
class HttpServer {
 public:
  // `handler` is borrowed and must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           HttpHandler* handler);
  ~HttpServer();

  int port() const { return port_; }
  bool tls() const;
  int open_connections() const;
  // Closes the listener, gives answers already on their way up to
  // `grace_ms` to be written, then closes every connection.
  void Stop(int64_t grace_ms = 2000);

  // Implementation detail (http_server.cc), shared with the connections.
  struct Shared;

 private:
  HttpServer() = default;

  std::shared_ptr<Shared> shared_;
  int port_ = 0;
};

}  // namespace ghostserve::http

#endif  // GHOSTSERVE_SERVER_HTTP_HTTP_SERVER_H_
