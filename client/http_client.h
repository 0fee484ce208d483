// A minimal HTTP/1.1 client for ghostserve's REST API (Boost.Beast, OpenSSL
// for HTTPS), behind `ghostserve-client bench --http`: one persistent
// keep-alive connection, used by one thread at a time, that reconnects after
// the server closes it or after any error.
//
// Each request blocks its caller. Underneath, Beast's asynchronous operations
// run on the client's own io_context on the calling thread: Beast's
// synchronous reads ignore timeouts (asio waits on the socket without a limit
// once it would block), while tcp_stream's asynchronous ones honour a
// deadline and can be cancelled from another thread (Shutdown).
#ifndef GHOSTSERVE_CLIENT_HTTP_CLIENT_H_
#define GHOSTSERVE_CLIENT_HTTP_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ghostserve::client {

// "HOST:PORT" split; the host may be a bracketed IPv6 literal ("[::1]:8000").
struct HttpTarget {
  std::string host;
  std::string port;
};
// InvalidArgument unless `address` is HOST:PORT with a port in 1..65535.
absl::StatusOr<HttpTarget> ParseHttpTarget(const std::string& address);

// "image/jpeg" or "image/png" from the magic bytes at the start of `image`,
// otherwise "application/octet-stream".
const char* ImageContentType(std::string_view image);

// "/v1/models/{model}:classify?top_k=K", the model name percent-encoded.
std::string ClassifyPath(const std::string& model, uint32_t top_k);

// The gRPC code name ghostserve's HTTP API maps to `http_status`
// (docs: http_api.md, "Errors"), so HTTP and gRPC summaries read alike:
// 200 OK, 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
// 404 NOT_FOUND, 408/504 DEADLINE_EXCEEDED, 413/429 RESOURCE_EXHAUSTED,
// 501 UNIMPLEMENTED, 503 UNAVAILABLE, other 5xx INTERNAL, anything else
// UNKNOWN.
std::string HttpStatusCodeName(int http_status);

// TLS settings for HttpClients (an OpenSSL client context), shareable.
class HttpTls;
// `ca_pem` is required; `cert_pem` and `key_pem` (a client certificate for
// mutual TLS) go together or are both empty. The server's certificate must
// name `server_name` (DNS name or IP address). InvalidArgument on bad PEM.
absl::StatusOr<std::shared_ptr<const HttpTls>> MakeHttpTls(const std::string& ca_pem,
                                                           const std::string& cert_pem,
                                                           const std::string& key_pem,
                                                           const std::string& server_name);

struct HttpResponse {
  int status = 0;
  std::string body;
};

class HttpClient {
 public:
  // `authorization` is the whole Authorization header value ("Bearer ...")
  // or empty for none; `tls` null for plain HTTP. Nothing happens on the
  // network until the first Post.
  HttpClient(HttpTarget target, std::string authorization,
             std::shared_ptr<const HttpTls> tls = nullptr);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POSTs `body` (not copied; must stay valid during the call) to `path`
  // and waits for the whole response, for at most `timeout` in all
  // (connecting included). Any HTTP status is a response, not an error.
  // Errors use gRPC's vocabulary: DeadlineExceeded on timeout, Unavailable
  // when the server cannot be reached or the connection broke, Cancelled
  // after Shutdown, Internal for a malformed response. A request that fails
  // on a reused connection before any response byte arrived (the server
  // closed an idle keep-alive connection) is sent once more on a new one.
  absl::StatusOr<HttpResponse> Post(const std::string& path, std::string_view content_type,
                                    std::string_view body, std::chrono::milliseconds timeout);

  // TCP connections opened so far. Not thread-safe: read it while no Post
  // is running.
  int64_t connects() const;

  // Thread-safe: aborts the request in progress, if any, and makes every
  // later Post fail with Cancelled.
  void Shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_HTTP_CLIENT_H_
