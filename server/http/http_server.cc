#include "server/http/http_server.h"

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace ghostserve::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using std::chrono::milliseconds;

Response MakeResponse(Status status, std::string body, std::string_view content_type) {
  Response res{status, 11};
  res.set(bhttp::field::server, "ghostserve");
  res.set(bhttp::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  res.body() = std::move(body);
  return res;
}

Response ErrorResponse(Status status, std::string_view message) {
  nlohmann::json body{{"error", message}};
  return MakeResponse(status,
                      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                      "application/json");
}

// State shared by the server, its connections and every pending Responder.
// Connections hold a plain pointer (they live inside ioc's handlers); a
// Responder holds a shared_ptr, so ioc outlives any connection an answer
// still refers to.
struct HttpServer::Shared {
  HttpServerOptions options;
  HttpHandler* handler = nullptr;
  // Declared before ioc: connections destroyed with ioc's pending handlers
  // still decrement it.
  std::atomic<int> connections{0};
  // Requests handed to the handler whose answer is not yet written.
  std::atomic<int> busy{0};
  // Body bytes reserved by requests being received or handled.
  std::atomic<uint64_t> buffered{0};
  // Stopping: no new connections, no keep-alive after the current answer.
  std::atomic<bool> closing{false};
  std::mutex mu;
  bool stopped = false;  // guarded by mu: the I/O threads are gone; answers are dropped
  std::optional<ssl::context> tls;
  net::io_context ioc;
  // On its own strand: accepts re-arm from completion handlers on any I/O
  // thread, and Stop closes it through the same strand.
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  virtual ~Connection() = default;
  // On the connection's strand.
  virtual void Send(Response res) = 0;
};

// One connection: requests are read, handled and answered one at a time
// (HTTP/1.1 without pipelining of work; a pipelined request waits in the
// buffer until the previous answer is written).
template <typename Stream>
class Session : public Connection {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <typename... Args>
  Session(HttpServer::Shared* shared, std::shared_ptr<HttpServer::Shared> keep, bool over_limit,
          Args&&... args)
      : shared_(shared),
        keep_weak_(keep),
        over_limit_(over_limit),
        stream_(std::forward<Args>(args)...),
        read_timer_(stream_.get_executor()) {
    shared_->connections.fetch_add(1);
    // As gRPC names peers, for the access log.
    boost::system::error_code ec;
    const auto remote = Lowest().socket().remote_endpoint(ec);
    if (!ec) {
      peer_ = (remote.address().is_v6() ? "ipv6:[" + remote.address().to_string() + "]:"
                                        : "ipv4:" + remote.address().to_string() + ":") +
              std::to_string(remote.port());
    }
  }
  ~Session() override {
    ReleaseBody();
    shared_->connections.fetch_sub(1);
  }

  void Run() {
    // Start on the strand (the socket was accepted on the acceptor's).
    net::dispatch(stream_.get_executor(), [self = Self()] { self->Start(); });
  }

  void Send(Response res) override {
    response_ = std::make_shared<Response>(std::move(res));
    response_->keep_alive(keep_alive_ && !shared_->closing.load());
    response_->prepare_payload();
    Lowest().expires_after(milliseconds(shared_->options.write_timeout_ms));
    bhttp::async_write(stream_, *response_,
                       [self = Self()](beast::error_code ec, std::size_t) { self->OnWrite(ec); });
  }

 private:
  std::shared_ptr<Session> Self() {
    return std::static_pointer_cast<Session>(this->shared_from_this());
  }
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  // Reads are bounded by read_timer_, not by the stream's own expiry: that
  // closes the socket, leaving no way to answer 408.
  void ArmReadTimer(int ms) {
    Lowest().expires_never();
    read_timed_out_ = false;
    const uint64_t generation = ++timer_generation_;
    read_timer_.expires_after(milliseconds(ms));
    read_timer_.async_wait([self = Self(), generation](beast::error_code ec) {
      if (ec || generation != self->timer_generation_) return;  // the read finished first
      self->read_timed_out_ = true;
      beast::error_code ignored;
      self->Lowest().socket().cancel(ignored);
    });
  }
  // In every read handler, first: true if the read ended by timing out.
  bool DisarmReadTimer() {
    ++timer_generation_;
    read_timer_.cancel();
    return read_timed_out_;
  }

  void Start() {
    if constexpr (kTls) {
      Lowest().expires_after(milliseconds(shared_->options.write_timeout_ms));
      stream_.async_handshake(ssl::stream_base::server, [self = Self()](beast::error_code ec) {
        if (ec) return self->Close();
        self->AfterConnect();
      });
    } else {
      AfterConnect();
    }
  }

  void AfterConnect() {
    if (over_limit_) {
      keep_alive_ = false;
      body_unread_ = true;
      Response res = ErrorResponse(Status::service_unavailable,
                                   "too many connections; retry later or reuse a connection");
      res.set(bhttp::field::retry_after, "1");
      return Send(std::move(res));
    }
    ReadRequest();
  }

  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(shared_->options.max_header_bytes);
    parser_->body_limit(shared_->options.max_body_bytes);
    if (buffer_.size() > 0) return ReadHeader();
    // Idle (keep-alive) wait for the first byte of the next request.
    ArmReadTimer(shared_->options.idle_timeout_ms);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = Self()](beast::error_code ec, std::size_t n) {
                              const bool timed_out = self->DisarmReadTimer();
                              if (ec || timed_out) return self->Close();  // idle or gone
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    ArmReadTimer(shared_->options.header_timeout_ms);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = Self()](beast::error_code ec, std::size_t) {
                               self->OnHeader(ec, self->DisarmReadTimer());
                             });
  }

  void OnHeader(beast::error_code ec, bool timed_out) {
    if (timed_out) return Refuse(Status::request_timeout, "request header not received in time");
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof) return Close();
    if (ec == bhttp::error::header_limit) {
      return Refuse(Status::request_header_fields_too_large,
                    absl::StrCat("request line and headers exceed ",
                                 shared_->options.max_header_bytes, " bytes"));
    }
    if (ec == bhttp::error::body_limit) {  // the parser checks Content-Length itself
      return Refuse(
          Status::payload_too_large,
          absl::StrCat("body exceeds the limit of ", shared_->options.max_body_bytes, " bytes"));
    }
    if (ec) return Refuse(Status::bad_request, absl::StrCat("malformed request: ", ec.message()));
    const RequestHeader& header = parser_->get().base();
    keep_alive_ = parser_->get().keep_alive();
    if (header.target().size() > shared_->options.max_uri_bytes) {
      return Refuse(Status::uri_too_long,
                    absl::StrCat("URI exceeds ", shared_->options.max_uri_bytes, " bytes"));
    }
    const auto length = parser_->content_length();
    if (length && *length > shared_->options.max_body_bytes) {
      return Refuse(Status::payload_too_large,
                    absl::StrCat("body of ", *length, " bytes exceeds the limit of ",
                                 shared_->options.max_body_bytes, " bytes"));
    }
    if (!parser_->is_done() && !ReserveBody(length ? *length : shared_->options.max_body_bytes)) {
      return Refuse(Status::service_unavailable,
                    "server is receiving too many request bodies at once; retry later");
    }
    if (auto early = shared_->handler->CheckHeader(header, peer_)) {
      if (!parser_->is_done()) {  // its body stays unread
        keep_alive_ = false;
        body_unread_ = true;
      }
      return Send(std::move(*early));
    }
    if (parser_->is_done()) return Dispatch();
    if (beast::iequals(header[bhttp::field::expect], "100-continue")) {
      // curl and others wait (curl: 1 s) for this before sending large bodies.
      auto cont =
          std::make_shared<bhttp::response<bhttp::empty_body>>(Status::continue_, header.version());
      Lowest().expires_after(milliseconds(shared_->options.write_timeout_ms));
      return bhttp::async_write(stream_, *cont,
                                [self = Self(), cont](beast::error_code ec, std::size_t) {
                                  if (ec) return self->Close();
                                  self->ReadBody();
                                });
    }
    ReadBody();
  }

  void ReadBody() {
    ArmReadTimer(shared_->options.body_timeout_ms);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = Self()](beast::error_code ec, std::size_t) {
                        self->OnBody(ec, self->DisarmReadTimer());
                      });
  }

  void OnBody(beast::error_code ec, bool timed_out) {
    if (timed_out) return Refuse(Status::request_timeout, "request body not received in time");
    if (ec == bhttp::error::body_limit) {
      return Refuse(
          Status::payload_too_large,
          absl::StrCat("body exceeds the limit of ", shared_->options.max_body_bytes, " bytes"));
    }
    if (ec == bhttp::error::partial_message || ec == net::error::eof ||
        ec == bhttp::error::end_of_stream) {
      return Close();  // the client went away mid-body: nobody to answer
    }
    if (ec) return Refuse(Status::bad_request, absl::StrCat("malformed body: ", ec.message()));
    Dispatch();
  }

  void Dispatch() {
    Lowest().expires_never();  // the request's own deadline governs from here
    auto request = std::make_shared<Request>(parser_->release());
    parser_.reset();
    std::shared_ptr<HttpServer::Shared> keep = keep_weak_.lock();
    if (keep == nullptr) return Close();
    // Members are destroyed in reverse order: the connection before the
    // shared state (and its io_context).
    struct Target {
      std::shared_ptr<HttpServer::Shared> shared;
      std::shared_ptr<Connection> connection;
    };
    auto target = std::make_shared<Target>(Target{std::move(keep), Self()});
    dispatched_ = true;
    shared_->busy.fetch_add(1);
    shared_->handler->Handle(std::move(request), peer_, [target](Response res) {
      std::lock_guard<std::mutex> lock(target->shared->mu);
      if (target->shared->stopped) return;
      auto connection = target->connection;
      net::post(static_cast<Session*>(connection.get())->stream_.get_executor(),
                [connection, res = std::move(res)]() mutable { connection->Send(std::move(res)); });
    });
  }

  // Answers a request that cannot be read or served, then closes.
  void Refuse(Status status, std::string_view message) {
    keep_alive_ = false;
    body_unread_ = true;  // whatever the client still sends is not read
    Response res = ErrorResponse(status, message);
    if (status == Status::service_unavailable) res.set(bhttp::field::retry_after, "1");
    Send(std::move(res));
  }

  void OnWrite(beast::error_code ec) {
    const bool keep_alive = response_->keep_alive();
    response_.reset();
    ReleaseBody();
    if (std::exchange(dispatched_, false)) shared_->busy.fetch_sub(1);
    if (!ec && std::exchange(body_unread_, false)) return LingeringClose();
    if (ec || !keep_alive) return Close();
    ReadRequest();
  }

  // After an answer sent without reading the whole request: the client may
  // still be sending its body, and closing a socket with unread data makes
  // the kernel reset the connection, which can destroy the answer before the
  // client reads it (curl: "Send failure: Broken pipe", no 401). So, as
  // nginx's lingering close does: half-close, read and drop what still comes
  // for up to kLingerMs or kLingerBytes, then close.
  void LingeringClose() {
    constexpr int kLingerMs = 1000;
    constexpr size_t kLingerBytes = 8 << 20;
    beast::error_code ignored;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    linger_left_ = kLingerBytes;
    linger_until_ = std::chrono::steady_clock::now() + milliseconds(kLingerMs);
    DrainSome();
  }
  void DrainSome() {
    const auto left =
        std::chrono::duration_cast<milliseconds>(linger_until_ - std::chrono::steady_clock::now());
    if (left.count() <= 0) return CloseSocket();
    ArmReadTimer(static_cast<int>(left.count()));
    if (linger_buffer_.empty()) linger_buffer_.resize(64 << 10);
    Lowest().socket().async_read_some(net::buffer(linger_buffer_),
                                      [self = Self()](beast::error_code ec, std::size_t n) {
                                        const bool timed_out = self->DisarmReadTimer();
                                        if (ec || timed_out || n >= self->linger_left_)
                                          return self->CloseSocket();
                                        self->linger_left_ -= n;
                                        self->DrainSome();
                                      });
  }
  bool ReserveBody(uint64_t bytes) {
    uint64_t held = shared_->buffered.load();
    do {
      if (held + bytes > shared_->options.max_buffered_bytes) return false;
    } while (!shared_->buffered.compare_exchange_weak(held, held + bytes));
    reserved_ += bytes;
    return true;
  }
  void ReleaseBody() { shared_->buffered.fetch_sub(std::exchange(reserved_, 0)); }

  void CloseSocket() {
    beast::error_code ignored;
    Lowest().socket().close(ignored);
  }

  void Close() {
    if constexpr (kTls) {
      Lowest().expires_after(milliseconds(1000));
      stream_.async_shutdown([self = Self()](beast::error_code) {
        beast::error_code ignored;
        self->Lowest().socket().close(ignored);
      });
    } else {
      beast::error_code ignored;
      Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      Lowest().socket().close(ignored);
    }
  }

  HttpServer::Shared* const shared_;
  const std::weak_ptr<HttpServer::Shared> keep_weak_;
  const bool over_limit_;
  std::string peer_;  // "ipv4:1.2.3.4:5678" ("" if unknown)
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<Response> response_;
  net::steady_timer read_timer_;
  uint64_t timer_generation_ = 0;
  bool read_timed_out_ = false;
  bool keep_alive_ = true;
  bool dispatched_ = false;   // the answer being written counts in shared_->busy
  bool body_unread_ = false;  // answered before the request was read whole
  uint64_t reserved_ = 0;     // this request's share of shared_->buffered
  size_t linger_left_ = 0;
  std::chrono::steady_clock::time_point linger_until_;
  std::vector<char> linger_buffer_;
};

void Accept(HttpServer::Shared* shared, std::weak_ptr<HttpServer::Shared> keep) {
  shared->acceptor->async_accept(
      net::make_strand(shared->ioc), [shared, keep](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted) return;  // stopped
        if (!ec) {
          const int open = shared->connections.load();
          // Far over the limit: close without a word rather than spend a
          // handshake on it.
          if (open >= 2 * shared->options.max_connections) {
            beast::error_code ignored;
            socket.close(ignored);
          } else {
            const bool over = open >= shared->options.max_connections;
            auto strong = keep.lock();
            if (shared->tls) {
              std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
                  shared, strong, over, std::move(socket), *shared->tls)
                  ->Run();
            } else {
              std::make_shared<Session<beast::tcp_stream>>(shared, strong, over, std::move(socket))
                  ->Run();
            }
          }
        }
        Accept(shared, keep);
      });
}

absl::StatusOr<tcp::endpoint> ParseListen(net::io_context& ioc, const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", listen, "' is not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", listen, "'"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto results = resolver.resolve(host.empty() ? "0.0.0.0" : host, std::to_string(port),
                                  tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve '", host, "': ", ec.message()));
  }
  return results.begin()->endpoint();
}

absl::Status MakeTls(const HttpServerOptions& o, std::optional<ssl::context>* out) {
  out->emplace(ssl::context::tls_server);
  ssl::context& ctx = **out;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  beast::error_code ec;
  ctx.use_certificate_chain(net::buffer(o.tls_cert_pem), ec);
  if (!ec) ctx.use_private_key(net::buffer(o.tls_key_pem), ssl::context::pem, ec);
  if (!ec && !o.tls_client_ca_pem.empty()) {
    ctx.add_certificate_authority(net::buffer(o.tls_client_ca_pem), ec);
    if (!ec) ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  }
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP TLS setup failed (check --tls-cert, --tls-key, --tls-client-ca): ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              HttpHandler* handler) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  auto shared = std::make_shared<Shared>();
  shared->options = options;
  shared->handler = handler;
  if (!options.tls_cert_pem.empty()) {
    if (auto s = MakeTls(options, &shared->tls); !s.ok()) return s;
  }
  auto endpoint = ParseListen(shared->ioc, options.listen);
  if (!endpoint.ok()) return endpoint.status();
  beast::error_code ec;
  shared->acceptor.emplace(net::make_strand(shared->ioc));
  tcp::acceptor& acceptor = *shared->acceptor;
  acceptor.open(endpoint->protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(*endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", options.listen, ": ", ec.message()));
  }
  server->port_ = acceptor.local_endpoint().port();
  Accept(shared.get(), shared);
  const int threads = std::max(1, options.io_threads);
  for (int i = 0; i < threads; ++i) {
    shared->threads.emplace_back([ioc = &shared->ioc] {
      auto guard = net::make_work_guard(*ioc);
      ioc->run();
    });
  }
  server->shared_ = std::move(shared);
  return server;
}

bool HttpServer::tls() const { return shared_->tls.has_value(); }

int HttpServer::open_connections() const { return shared_->connections.load(); }

void HttpServer::Stop(int64_t grace_ms) {
  if (shared_ == nullptr || shared_->closing.exchange(true)) return;
  // No new connections; answers already on their way get `grace_ms` to be
  // written (the caller has let the handler finish its requests first).
  net::post(shared_->acceptor->get_executor(), [shared = shared_.get()] {
    beast::error_code ignored;
    shared->acceptor->close(ignored);
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  while (shared_->busy.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->stopped = true;
  }
  shared_->ioc.stop();
  for (auto& t : shared_->threads) t.join();
  shared_->threads.clear();
  // No I/O thread runs any more (the posted close may not have run).
  beast::error_code ignored;
  shared_->acceptor->close(ignored);
}

HttpServer::~HttpServer() {
  Stop();
  // Connections still referenced by pending answers keep the io_context
  // (and so their sockets) valid until those answers are dropped.
  shared_.reset();
}

}  // namespace ghostserve::http
