// ghostserve.v1.Classifier on gRPC's callback API: no handler thread ever
// blocks on a batch.
#ifndef GHOSTSERVE_SERVER_SERVICE_CLASSIFIER_SERVICE_H_
#define GHOSTSERVE_SERVER_SERVICE_CLASSIFIER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "ghostserve/v1/classifier.grpc.pb.h"
#include "server/core/inference_core.h"
#include "server/metrics/metrics.h"
#include "server/service/auth.h"
#include "server/service/request_recorder.h"

namespace ghostserve::service {

// Deadline of a call as an absolute time on `clock`, 0 if it has none.
int64_t DeadlineOnClock(const grpc::CallbackServerContext& ctx, const batcher::Clock& clock);
// `timeout_us` from now on `clock`; 0 (no deadline) for a timeout of 0.
inline int64_t TimeoutDeadline(const batcher::Clock& clock, int64_t timeout_us) {
  return timeout_us > 0 ? clock.NowMicros() + timeout_us : 0;
}
// The earlier of two deadlines, where 0 means none.
inline int64_t EarlierDeadline(int64_t a, int64_t b) {
  return a == 0 ? b : b == 0 ? a : std::min(a, b);
}

// Thread-safe. `core`, `metrics` and `auth` (both may be null; null auth
// admits every call) are borrowed and must outlive the gRPC server this
// service is registered with. Every method checks `auth` first.
class ClassifierService final : public ghostserve::v1::Classifier::CallbackService {
 public:
  // `log` (may be null: no access log) is borrowed like the rest.
  ClassifierService(core::InferenceCore* core, metrics::ServerMetrics* metrics,
                    const BearerAuth* auth = nullptr, AccessLog* log = nullptr)
      : core_(core), metrics_(metrics), auth_(auth), log_(log) {}

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* ctx,
                                     const ghostserve::v1::ClassifyRequest* request,
                                     ghostserve::v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<ghostserve::v1::ClassifyRequest, ghostserve::v1::ClassifyResponse>*
  ClassifyStream(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const ghostserve::v1::ListModelsRequest* request,
                                       ghostserve::v1::ListModelsResponse* response) override;

  // Runs one classification; `done` gets the gRPC status and, when OK, the
  // filled response. `deadline_us` is on the core's clock (0 = none);
  // `is_cancelled` is polled until `done` runs. `request` must stay valid
  // until `done` has run. `info` describes the call for the access log
  // (its request id and size are filled in here).
  void RunClassify(const ghostserve::v1::ClassifyRequest* request, int64_t deadline_us,
                   std::function<bool()> is_cancelled, CallInfo info,
                   std::function<void(grpc::Status, ghostserve::v1::ClassifyResponse)> done);
  AccessLog* access_log() const { return log_; }

 private:
  core::InferenceCore* const core_;
  metrics::ServerMetrics* const metrics_;
  const BearerAuth* const auth_;
  AccessLog* const log_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_CLASSIFIER_SERVICE_H_
