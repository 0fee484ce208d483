// The HTTP server on its own (server/http/http_server.h), with a handler
// that answers from other threads, later, or never, and real Beast clients
// on loopback. No Torch, so `make tsan` runs it under ThreadSanitizer.
#include "server/http/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ghostserve::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

// /echo answers the body back from a new thread; /hold keeps the responder
// until the test releases it; /missing is refused from the header.
class TestHandler : public HttpHandler {
 public:
  ~TestHandler() override {
    for (auto& t : threads_) t.join();
  }

  std::optional<Response> CheckHeader(const RequestHeader& header, const std::string&) override {
    if (header.target() == "/missing") return ErrorResponse(Status::not_found, "no such thing");
    return std::nullopt;
  }

  void Handle(std::shared_ptr<Request> request, const std::string&, Responder respond) override {
    if (request->target() == "/hold") {
      std::lock_guard<std::mutex> lock(mu_);
      held_.push_back(std::move(respond));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    threads_.emplace_back([request, respond = std::move(respond)] {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      respond(MakeResponse(Status::ok, request->body(), "application/octet-stream"));
    });
  }

  size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  // Answers every held request (possibly after the server stopped).
  void ReleaseHeld() {
    std::vector<Responder> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held.swap(held_);
    }
    for (auto& r : held) r(MakeResponse(Status::ok, "late", "text/plain"));
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::vector<Responder> held_;
};

struct Client {
  explicit Client(int port) : socket(ioc) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
  }
  bhttp::response<bhttp::string_body> Send(bhttp::verb verb, const std::string& target,
                                           const std::string& body) {
    bhttp::request<bhttp::string_body> req{verb, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.body() = body;
    req.prepare_payload();
    bhttp::write(socket, req);
    bhttp::response<bhttp::string_body> res;
    bhttp::read(socket, buffer, res);
    return res;
  }
  net::io_context ioc;
  tcp::socket socket;
  beast::flat_buffer buffer;
};

HttpServerOptions LoopbackOptions() {
  HttpServerOptions o;
  o.listen = "127.0.0.1:0";
  o.io_threads = 2;
  return o;
}

TEST(HttpServerTest, AnswersFromOtherThreadsOnKeptAliveConnections) {
  TestHandler handler;
  auto server = HttpServer::Start(LoopbackOptions(), &handler);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      Client client(port);
      for (int i = 0; i < 25; ++i) {
        const std::string body = "client " + std::to_string(c) + " request " + std::to_string(i) +
                                 std::string(static_cast<size_t>(i * 97), 'x');
        auto res = client.Send(bhttp::verb::post, "/echo", body);
        if (res.result() == Status::ok && res.body() == body && res.keep_alive()) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 6 * 25);
  Client client(port);
  auto missing = client.Send(bhttp::verb::get, "/missing", "");
  EXPECT_EQ(missing.result(), Status::not_found);
  EXPECT_NE(missing.body().find("no such thing"), std::string::npos);
}

TEST(HttpServerTest, StopWithAnswersPendingDropsThemSafely) {
  auto handler = std::make_unique<TestHandler>();
  auto server = HttpServer::Start(LoopbackOptions(), handler.get());
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([port] {
      Client client(port);
      try {
        client.Send(bhttp::verb::get, "/hold", "");
      } catch (const std::exception&) {
        // The server closes the connection without an answer.
      }
    });
  }
  for (int i = 0; i < 5000 && handler->held() < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(handler->held(), 4u);
  // Answer two while stopping, the rest after the server is gone.
  std::thread late([&] { handler->ReleaseHeld(); });
  (*server)->Stop(/*grace_ms=*/50);
  late.join();
  for (auto& t : clients) t.join();
  server->reset();
  handler->ReleaseHeld();  // nothing held any more: a no-op
  EXPECT_EQ(handler->held(), 0u);
}

TEST(HttpServerTest, ResponderOutlivingTheServerIsDropped) {
  auto handler = std::make_unique<TestHandler>();
  auto server = HttpServer::Start(LoopbackOptions(), handler.get());
  ASSERT_TRUE(server.ok()) << server.status();
  std::thread client([port = (*server)->port()] {
    Client c(port);
    try {
      c.Send(bhttp::verb::get, "/hold", "");
    } catch (const std::exception&) {
    }
  });
  for (int i = 0; i < 5000 && handler->held() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(handler->held(), 1u);
  server->reset();         // destroyed with an answer still owed
  handler->ReleaseHeld();  // the late answer finds no server: dropped
  client.join();
}

TEST(HttpServerTest, LimitsAndTimeouts) {
  TestHandler handler;
  HttpServerOptions o = LoopbackOptions();
  o.max_body_bytes = 1000;
  o.header_timeout_ms = 200;
  auto server = HttpServer::Start(o, &handler);
  ASSERT_TRUE(server.ok()) << server.status();
  Client big((*server)->port());
  auto res = big.Send(bhttp::verb::post, "/echo", std::string(5000, 'b'));
  EXPECT_EQ(res.result(), Status::payload_too_large);
  EXPECT_FALSE(res.keep_alive());

  // Half a header, then nothing: 408 after the header timeout.
  Client slow((*server)->port());
  net::write(slow.socket, net::buffer(std::string("GET /echo HTTP/1.1\r\nHost: x\r\n")));
  bhttp::response<bhttp::string_body> timed_out;
  const auto t0 = std::chrono::steady_clock::now();
  bhttp::read(slow.socket, slow.buffer, timed_out);
  EXPECT_EQ(timed_out.result(), Status::request_timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

}  // namespace
}  // namespace ghostserve::http
