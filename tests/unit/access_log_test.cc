#include "server/service/access_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace ghostserve::service {
namespace {

TEST(TraceparentTest, AcceptsOnlyValidW3CValues) {
  const std::string good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  EXPECT_EQ(ValidTraceparent(good), good);
  for (const std::string bad : {
           std::string(""),
           good.substr(0, 54),
           good + "0",
           std::string("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),  // upper case
           std::string("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),  // version ff
           std::string("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),  // zero trace
           std::string("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),  // zero parent
           std::string("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
           std::string("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
       }) {
    EXPECT_FALSE(ValidTraceparent(bad).has_value()) << bad;
  }
}

TEST(AccessLogTest, FormatsOneJsonObjectWithEveryField) {
  AccessRecord r;
  r.request_id = "id-7";
  r.model = "fashion";
  r.version = 2;
  r.protocol = "grpc";
  r.api = "kserve.ModelInfer";
  r.code = "OK";
  r.bytes_in = 1234;
  r.bytes_out = 96;
  r.duration_us = 8123;
  r.timing = core::Timing{3, 812, 950, 6100, 7990};
  r.peer = "ipv4:127.0.0.1:51234";
  r.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::string line = AccessLog::Format(r, 1796661600123);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line,
            R"({"time":"2026-12-07T16:40:00.123Z","request_id":"id-7","model":"fashion",)"
            R"("version":2,"protocol":"grpc","api":"kserve.ModelInfer","code":"OK",)"
            R"("bytes_in":1234,"bytes_out":96,"duration_us":8123,"timing_us":{"preprocess_wait":3,)"
            R"("preprocess":812,"queue":950,"inference":6100,"total":7990},)"
            R"("peer":"ipv4:127.0.0.1:51234",)"
            R"("traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})");
}

TEST(AccessLogTest, ClientStringsAreEscapedAndCut) {
  AccessRecord r;
  r.request_id = std::string("a\"b\n\xff", 5) + std::string(300, 'x');
  r.model = "m\\";
  r.code = "INVALID_ARGUMENT";
  const auto j = nlohmann::json::parse(AccessLog::Format(r, 0));
  const std::string id = j["request_id"];
  EXPECT_EQ(id.substr(0, 4), "a\"b\n");
  EXPECT_LE(id.size(), 128u + 2);  // the invalid byte becomes U+FFFD (3 bytes)
  EXPECT_EQ(j["model"], "m\\");
  EXPECT_FALSE(j.contains("version"));
  EXPECT_FALSE(j.contains("timing_us"));
  EXPECT_FALSE(j.contains("traceparent"));
}

TEST(AccessLogTest, SamplesSuccessesAndKeepsEveryFailure) {
  auto log = AccessLog::Open({"-", 4});
  ASSERT_TRUE(log.ok());
  int ok = 0, failed = 0;
  for (int i = 0; i < 40; ++i) ok += (*log)->Sampled(true);
  for (int i = 0; i < 10; ++i) failed += (*log)->Sampled(false);
  EXPECT_EQ(ok, 10);
  EXPECT_EQ(failed, 10);
  EXPECT_EQ(AccessLog::Open({"", 1}).value(), nullptr);
  EXPECT_THAT(AccessLog::Open({"/nonexistent/dir/log", 1}).status().message(),
              ::testing::HasSubstr("--access-log /nonexistent/dir/log"));
}

}  // namespace
}  // namespace ghostserve::service
