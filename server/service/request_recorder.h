// The one place an inference RPC's outcome is recorded, whatever its API:
// the request metrics and the access log (access_log.h).
#ifndef GHOSTSERVE_SERVER_SERVICE_REQUEST_RECORDER_H_
#define GHOSTSERVE_SERVER_SERVICE_REQUEST_RECORDER_H_

#include <google/protobuf/message_lite.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <utility>

#include "proto/status_code_name.h"
#include "server/batcher/clock.h"
#include "server/core/request.h"
#include "server/metrics/metrics.h"
#include "server/service/access_log.h"

namespace ghostserve::service {

// What the access log says about a call, known when it arrives.
struct CallInfo {
  const char* api = "";  // e.g. "kserve.ModelInfer", "http.classify"
  std::string request_id;
  std::string peer;
  std::string traceparent;  // valid W3C traceparent or empty
  int64_t bytes_in = 0;
};

// The call's traceparent from gRPC metadata, and with an access log (`log`
// not null) its peer. If the client sent a valid traceparent it is also
// added to the response's initial metadata (access log or not), so call once
// per call (a stream's messages share it), before the response starts.
CallInfo GrpcCallInfo(grpc::CallbackServerContext* ctx, const char* api, const AccessLog* log);

// Started when a call arrives; Record counts it by model, protocol and status
// code, observes its latency and writes its access-log line (if sampled).
// `metrics` and `log` (both may be null) and `clock` are borrowed. Copyable;
// thread-compatible.
class RequestRecorder {
 public:
  RequestRecorder(metrics::ServerMetrics* metrics, const batcher::Clock* clock, std::string model,
                  metrics::Protocol protocol = metrics::Protocol::kGrpc, AccessLog* log = nullptr,
                  CallInfo info = {})
      : metrics_(metrics),
        clock_(clock),
        model_(std::move(model)),
        protocol_(protocol),
        start_us_(clock->NowMicros()),
        log_(log),
        info_(log != nullptr ? std::make_shared<const CallInfo>(std::move(info)) : nullptr) {}

  // `result` (the answer, when there is one) and `bytes_out` (the response's
  // size) go to the access log.
  void Record(const grpc::Status& status, const core::InferResult* result = nullptr,
              int64_t bytes_out = 0) const {
    Record(StatusCodeName(status.error_code()), result, bytes_out);
  }
  // As above, the size of `response` (may be null) taken only when the line
  // is written.
  void Record(const grpc::Status& status, const core::InferResult* result,
              const google::protobuf::MessageLite* response) const {
    Record(status, result,
           log_ != nullptr && response != nullptr ? static_cast<int64_t>(response->ByteSizeLong())
                                                  : 0);
  }
  // `code` is a gRPC status code name ("OK", "NOT_FOUND", ...).
  void Record(const std::string& code, const core::InferResult* result = nullptr,
              int64_t bytes_out = 0) const;

 private:
  metrics::ServerMetrics* metrics_;
  const batcher::Clock* clock_;
  std::string model_;
  metrics::Protocol protocol_;
  int64_t start_us_;
  AccessLog* log_;
  std::shared_ptr<const CallInfo> info_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_REQUEST_RECORDER_H_
