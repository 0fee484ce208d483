// The access log: one JSON line per inference request, whatever its API.
//
//   {"time":"2026-12-07T16:40:00.123Z","request_id":"id-7","model":"fashion",
//    "version":2,"protocol":"grpc","api":"kserve.ModelInfer","code":"OK",
//    "bytes_in":1234,"bytes_out":96,"duration_us":8123,
//    "timing_us":{"preprocess_wait":3,"preprocess":812,"queue":950,
//                 "inference":6100,"total":7990},
//    "peer":"ipv4:127.0.0.1:51234","traceparent":"00-...-...-01"}
//
// Every failed request is logged; successful ones 1 in `sample` (so a busy
// server's log stays small while every error is kept). A W3C traceparent the
// client sent (gRPC metadata or HTTP header) is logged and returned in the
// response. Client-supplied strings are JSON-escaped and cut to 128 bytes.
#ifndef GHOSTSERVE_SERVER_SERVICE_ACCESS_LOG_H_
#define GHOSTSERVE_SERVER_SERVICE_ACCESS_LOG_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/core/request.h"

namespace ghostserve::service {

// `value` if it is a valid W3C traceparent (version 00-fe, 32 hex trace id
// and 16 hex parent id, neither all zeros, 2 hex flags; lowercase), else
// nullopt.
std::optional<std::string> ValidTraceparent(std::string_view value);

// What one request's line says; filled by RequestRecorder.
struct AccessRecord {
  std::string request_id;
  std::string model;
  int64_t version = 0;  // 0: none ran (refused before a version was chosen)
  const char* protocol = "grpc";
  const char* api = "";
  std::string code;
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;
  int64_t duration_us = 0;
  std::optional<core::Timing> timing;
  std::string peer;
  std::string traceparent;
};

struct AccessLogOptions {
  // "" = off, "-" = standard error, else a file appended to.
  std::string path;
  // Log 1 in `sample` successful requests (>= 1); failures always.
  int sample = 1;
};

// Thread-safe. Lines are written whole, under a mutex, and flushed.
class AccessLog {
 public:
  // Null when options.path is empty; an error if the file cannot be opened.
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(const AccessLogOptions& options);
  ~AccessLog();

  // Whether a request that ended `ok` gets a line (advances the sampler).
  bool Sampled(bool ok);
  void Write(const AccessRecord& record);
  // The line Write would write (without the newline).
  static std::string Format(const AccessRecord& record, int64_t unix_ms);

 private:
  AccessLog(std::FILE* file, bool owned, int sample)
      : file_(file), owned_(owned), sample_(sample) {}

  std::FILE* const file_;
  const bool owned_;
  const int sample_;
  std::atomic<uint64_t> ok_seen_{0};
  std::mutex mu_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_ACCESS_LOG_H_
