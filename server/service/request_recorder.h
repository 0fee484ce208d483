// The one place an inference RPC's outcome is recorded, whatever its API.
#ifndef GHOSTSERVE_SERVER_SERVICE_REQUEST_RECORDER_H_
#define GHOSTSERVE_SERVER_SERVICE_REQUEST_RECORDER_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "proto/status_code_name.h"
#include "server/batcher/clock.h"
#include "server/metrics/metrics.h"

namespace ghostserve::service {

// Started when a call arrives; Record counts it by model, protocol and status
// code and observes its latency. `metrics` (may be null) and `clock` are
// borrowed. Copyable; thread-compatible.
class RequestRecorder {
 public:
  RequestRecorder(metrics::ServerMetrics* metrics, const batcher::Clock* clock, std::string model,
                  metrics::Protocol protocol = metrics::Protocol::kGrpc)
      : metrics_(metrics),
        clock_(clock),
        model_(std::move(model)),
        protocol_(protocol),
        start_us_(clock->NowMicros()) {}

  void Record(const grpc::Status& status) const { Record(StatusCodeName(status.error_code())); }
  // `code` is a gRPC status code name ("OK", "NOT_FOUND", ...).
  void Record(const std::string& code) const {
    if (metrics_ == nullptr) return;
    metrics_->RecordRequest(model_, protocol_, code, (clock_->NowMicros() - start_us_) * 1e-6);
  }

 private:
  metrics::ServerMetrics* metrics_;
  const batcher::Clock* clock_;
  std::string model_;
  metrics::Protocol protocol_;
  int64_t start_us_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_REQUEST_RECORDER_H_
