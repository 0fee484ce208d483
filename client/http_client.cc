#include "client/http_client.h"

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ghostserve::client {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// Same cap as gRPC's receive limit (kMaxReceiveMessageBytes in rpc.h): large
// top_k answers are big JSON documents.
constexpr uint64_t kMaxResponseBodyBytes = 64 << 20;

}  // namespace

absl::StatusOr<HttpTarget> ParseHttpTarget(const std::string& address) {
  HttpTarget t;
  size_t colon;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("--http ", address, ": expected [IPv6]:PORT"));
    }
    t.host = address.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = address.rfind(':');
    if (colon == std::string::npos || address.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat("--http ", address, ": expected HOST:PORT"));
    }
    t.host = address.substr(0, colon);
  }
  t.port = address.substr(colon + 1);
  int port = 0;
  if (t.host.empty() || !absl::SimpleAtoi(t.port, &port) || port < 1 || port > 65535 ||
      t.port.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http ", address, ": expected HOST:PORT with a port in 1..65535"));
  }
  return t;
}

const char* ImageContentType(std::string_view image) {
  if (image.size() >= 3 && image.compare(0, 3, "\xFF\xD8\xFF") == 0) return "image/jpeg";
  if (image.size() >= 8 && image.compare(0, 8, "\x89PNG\r\n\x1A\n") == 0) return "image/png";
  return "application/octet-stream";
}

std::string ClassifyPath(const std::string& model, uint32_t top_k) {
  std::string path = "/v1/models/";
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const unsigned char c : model) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      path += static_cast<char>(c);
    } else {
      path += '%';
      path += kHex[c >> 4];
      path += kHex[c & 15];
    }
  }
  return absl::StrCat(path, ":classify?top_k=", top_k);
}

std::string HttpStatusCodeName(int s) {
  switch (s) {
    case 200:
      return "OK";
    case 400:
      return "INVALID_ARGUMENT";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "NOT_FOUND";
    case 408:
    case 504:
      return "DEADLINE_EXCEEDED";
    case 413:
    case 429:
      return "RESOURCE_EXHAUSTED";
    case 501:
      return "UNIMPLEMENTED";
    case 503:
      return "UNAVAILABLE";
    default:
      return s >= 500 && s < 600 ? "INTERNAL" : "UNKNOWN";
  }
}

class HttpTls {
 public:
  asio::ssl::context context{asio::ssl::context::tls_client};
  std::string server_name;
};

absl::StatusOr<std::shared_ptr<const HttpTls>> MakeHttpTls(const std::string& ca_pem,
                                                           const std::string& cert_pem,
                                                           const std::string& key_pem,
                                                           const std::string& server_name) {
  auto tls = std::make_shared<HttpTls>();
  tls->server_name = server_name;
  SSL_CTX_set_min_proto_version(tls->context.native_handle(), TLS1_2_VERSION);
  beast::error_code ec;
  tls->context.add_certificate_authority(asio::buffer(ca_pem), ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-ca: ", ec.message()));
  if (!cert_pem.empty()) {
    tls->context.use_certificate_chain(asio::buffer(cert_pem), ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", ec.message()));
    tls->context.use_private_key(asio::buffer(key_pem), asio::ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-key: ", ec.message()));
  }
  tls->context.set_verify_mode(asio::ssl::verify_peer);
  return std::shared_ptr<const HttpTls>(std::move(tls));
}

struct HttpClient::Impl {
  using Request = http::request<http::span_body<const char>>;
  using Parser = http::response_parser<http::string_body>;

  Impl(HttpTarget t, std::string auth, std::shared_ptr<const HttpTls> tls_settings)
      : target(std::move(t)),
        host_header(target.host.find(':') != std::string::npos
                        ? absl::StrCat("[", target.host, "]:", target.port)
                        : absl::StrCat(target.host, ":", target.port)),
        authorization(std::move(auth)),
        tls(std::move(tls_settings)) {}

  // Runs the operations started on this thread to completion.
  void Run() {
    ioc.restart();
    ioc.run();
  }

  // The TCP layer of the current connection.
  beast::tcp_stream& Tcp() { return tls_stream ? beast::get_lowest_layer(*tls_stream) : stream; }

  void Close() {
    beast::error_code ignored;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Tcp().socket().close(ignored);
    tls_stream.reset();  // a TLS stream does not survive its connection
    buffer.clear();
  }

  // Writes `req` and reads the answer into `parser` on `s`.
  template <class Stream>
  beast::error_code Exchange(Stream& s, const Request& req, Parser& parser) {
    beast::error_code ec;
    http::async_write(s, req, [&ec](beast::error_code e, size_t) { ec = e; });
    Run();
    if (ec || shutdown) return ec;
    buffer.clear();  // never pipelined: nothing of another response is left
    http::async_read(s, buffer, parser, [&ec](beast::error_code e, size_t) { ec = e; });
    Run();
    return ec;
  }

  absl::Status Connect(std::chrono::steady_clock::time_point deadline);
  absl::StatusOr<HttpResponse> Post(const std::string& path, std::string_view content_type,
                                    std::string_view body, std::chrono::milliseconds timeout);

  const HttpTarget target;
  const std::string host_header;
  const std::string authorization;
  const std::shared_ptr<const HttpTls> tls;
  asio::io_context ioc{1};
  // The connection: `stream` for plain HTTP, `tls_stream` (made anew for
  // each connection) for HTTPS.
  beast::tcp_stream stream{ioc};
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_stream;
  beast::flat_buffer buffer;
  std::optional<tcp::resolver::results_type> endpoints;
  std::atomic<bool> shutdown{false};
  int64_t connects = 0;
};

absl::Status HttpClient::Impl::Connect(std::chrono::steady_clock::time_point deadline) {
  if (!endpoints) {
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    auto results = resolver.resolve(target.host, target.port, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("resolve ", target.host, ": ", ec.message()));
    }
    endpoints = std::move(results);
  }
  // const_cast: asio takes the context by non-const reference, but a stream
  // only reads its settings (OpenSSL's SSL_new).
  if (tls) {
    tls_stream = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(
        ioc, const_cast<asio::ssl::context&>(tls->context));
  }
  beast::error_code ec;
  Tcp().expires_at(deadline);
  Tcp().async_connect(*endpoints, [&ec](beast::error_code e, const tcp::endpoint&) { ec = e; });
  Run();
  const auto failed = [&](absl::string_view step) {
    Close();
    if (shutdown) return absl::CancelledError("client shut down");
    const std::string what = absl::StrCat(step, " ", host_header, ": ", ec.message());
    return ec == beast::error::timeout ? absl::DeadlineExceededError(what)
                                       : absl::UnavailableError(what);
  };
  if (ec || shutdown) return failed("connect to");
  ++connects;
  Tcp().socket().set_option(tcp::no_delay(true), ec);
  if (tls) {
    const std::string& name = tls->server_name.empty() ? target.host : tls->server_name;
    beast::error_code not_ip;
    asio::ip::make_address(name, not_ip);
    // SNI carries DNS names only.
    if (not_ip && !SSL_set_tlsext_host_name(tls_stream->native_handle(), name.c_str())) {
      ec = beast::error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
      return failed("TLS server name for");
    }
    tls_stream->set_verify_callback(asio::ssl::host_name_verification(name));
    tls_stream->async_handshake(asio::ssl::stream_base::client,
                                [&ec](beast::error_code e) { ec = e; });
    Run();
    if (ec || shutdown) return failed("TLS handshake with");
  }
  return absl::OkStatus();
}

absl::StatusOr<HttpResponse> HttpClient::Impl::Post(const std::string& path,
                                                    std::string_view content_type,
                                                    std::string_view body,
                                                    std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Impl::Request req{http::verb::post, path, 11};
  req.set(http::field::host, host_header);
  req.set(http::field::user_agent, "ghostserve-client");
  req.set(http::field::accept, "application/json");
  req.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  req.body() = beast::span<const char>(body.data(), body.size());
  req.prepare_payload();

  for (int attempt = 0;; ++attempt) {
    if (shutdown) return absl::CancelledError("client shut down");
    const bool reused = Tcp().socket().is_open();
    if (!reused) {
      absl::Status connected = Connect(deadline);
      if (!connected.ok()) return connected;
    }
    Tcp().expires_at(deadline);
    Parser parser;
    parser.body_limit(kMaxResponseBodyBytes);
    const beast::error_code ec =
        tls_stream ? Exchange(*tls_stream, req, parser) : Exchange(stream, req, parser);
    if (shutdown) {
      Close();
      return absl::CancelledError("client shut down");
    }
    if (ec) {
      Close();
      if (ec == beast::error::timeout) {
        return absl::DeadlineExceededError(
            absl::StrCat("no response within ", timeout.count(), " ms"));
      }
      // A keep-alive connection the server had closed: try a fresh one once.
      if (reused && attempt == 0 && !parser.got_some()) continue;
      if (ec.category() == http::make_error_code(http::error::bad_version).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        return absl::InternalError(absl::StrCat("bad HTTP response: ", ec.message()));
      }
      return absl::UnavailableError(absl::StrCat(host_header, ": ", ec.message()));
    }
    http::response<http::string_body> res = parser.release();
    if (!res.keep_alive()) Close();
    HttpResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    return out;
  }
}

HttpClient::HttpClient(HttpTarget target, std::string authorization,
                       std::shared_ptr<const HttpTls> tls)
    : impl_(std::make_unique<Impl>(std::move(target), std::move(authorization), std::move(tls))) {}

HttpClient::~HttpClient() = default;

absl::StatusOr<HttpResponse> HttpClient::Post(const std::string& path,
                                              std::string_view content_type, std::string_view body,
                                              std::chrono::milliseconds timeout) {
  return impl_->Post(path, content_type, body, timeout);
}

int64_t HttpClient::connects() const { return impl_->connects; }

void HttpClient::Shutdown() {
  impl_->shutdown = true;
  // Runs on the thread that is inside Post (in Run), or at its next Run.
  asio::post(impl_->ioc, [impl = impl_.get()] { impl->Tcp().cancel(); });
}

}  // namespace ghostserve::client
