#include "server/service/access_log.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace ghostserve::service {
namespace {

constexpr size_t kMaxClientString = 128;

bool LowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string Iso8601(int64_t unix_ms) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

}  // namespace

std::optional<std::string> ValidTraceparent(std::string_view v) {
  // 00-<32 hex>-<16 hex>-<2 hex>
  if (v.size() != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  const std::string_view version = v.substr(0, 2), trace = v.substr(3, 32),
                         parent = v.substr(36, 16), flags = v.substr(53, 2);
  if (!LowerHex(version) || !LowerHex(trace) || !LowerHex(parent) || !LowerHex(flags)) {
    return std::nullopt;
  }
  if (version == "ff") return std::nullopt;
  if (trace.find_first_not_of('0') == std::string_view::npos ||
      parent.find_first_not_of('0') == std::string_view::npos) {
    return std::nullopt;
  }
  return std::string(v);
}

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const AccessLogOptions& options) {
  if (options.path.empty()) return std::unique_ptr<AccessLog>();
  const int sample = options.sample < 1 ? 1 : options.sample;
  if (options.path == "-") return std::unique_ptr<AccessLog>(new AccessLog(stderr, false, sample));
  std::FILE* f = std::fopen(options.path.c_str(), "ae");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--access-log ", options.path, ": cannot open: ", std::strerror(errno)));
  }
  return std::unique_ptr<AccessLog>(new AccessLog(f, true, sample));
}

AccessLog::~AccessLog() {
  if (owned_) std::fclose(file_);
}

bool AccessLog::Sampled(bool ok) {
  if (!ok) return true;
  return ok_seen_.fetch_add(1, std::memory_order_relaxed) % static_cast<uint64_t>(sample_) == 0;
}

std::string AccessLog::Format(const AccessRecord& r, int64_t unix_ms) {
  nlohmann::ordered_json j;
  j["time"] = Iso8601(unix_ms);
  j["request_id"] = r.request_id.substr(0, kMaxClientString);
  j["model"] = r.model.substr(0, kMaxClientString);
  if (r.version > 0) j["version"] = r.version;
  j["protocol"] = r.protocol;
  j["api"] = r.api;
  j["code"] = r.code;
  j["bytes_in"] = r.bytes_in;
  j["bytes_out"] = r.bytes_out;
  j["duration_us"] = r.duration_us;
  if (r.timing) {
    j["timing_us"] = {{"preprocess_wait", r.timing->preprocess_wait_us},
                      {"preprocess", r.timing->preprocess_us},
                      {"queue", r.timing->queue_us},
                      {"inference", r.timing->inference_us},
                      {"total", r.timing->total_us}};
  }
  j["peer"] = r.peer;
  if (!r.traceparent.empty()) j["traceparent"] = r.traceparent;
  // Client strings may hold invalid UTF-8: replaced, never thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void AccessLog::Write(const AccessRecord& record) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::string line = Format(record, now_ms);
  line.push_back('\n');
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace ghostserve::service
