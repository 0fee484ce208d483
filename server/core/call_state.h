// Per-request state: a request's images finish into it from any thread, and
// the last one answers the caller.
#ifndef GHOSTSERVE_SERVER_CORE_CALL_STATE_H_
#define GHOSTSERVE_SERVER_CORE_CALL_STATE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "server/batcher/clock.h"
#include "server/core/admission.h"
#include "server/core/request.h"
#include "server/core/servable.h"

namespace prometheus {
class Gauge;
}

namespace ghostserve::core {

// Requests accepted and not yet answered, for draining (WaitIdle) and the
// in-flight gauge. Thread-safe.
class InflightTracker {
 public:
  // `gauge` may be null; borrowed.
  explicit InflightTracker(prometheus::Gauge* gauge) : gauge_(gauge) {}
  void Begin();
  // A request is about to be answered: the gauge drops first, so a scrape
  // that follows a client's last response never sees it still in flight...
  void Answering();
  // ...and the count after, so a drain never closes the transport under an
  // answer.
  void End();
  // Blocks until the count is zero or `timeout_us` of real time passes.
  bool WaitIdle(int64_t timeout_us);
  int count() const { return count_.load(); }

 private:
  prometheus::Gauge* const gauge_;
  std::atomic<int> count_{0};
  std::mutex mu_;
  std::condition_variable idle_cv_;
};

// Thread-safe. Answers through `done` exactly once, when every image has
// succeeded or failed: with the first failure, or with all logits.
class CallState {
 public:
  // `clock` and `inflight` are borrowed and outlive every request; the call
  // has already been counted in `inflight` (Begin). `ticket` is released
  // just before the answer goes out.
  CallState(ServableUse servable, AdmissionTicket ticket, InferDone done,
            std::function<bool()> is_cancelled, int images, int64_t top_k, int priority,
            int64_t start_us, int64_t deadline_us, batcher::Clock* clock,
            InflightTracker* inflight);
  CallState(const CallState&) = delete;
  CallState& operator=(const CallState&) = delete;

  Servable& servable() const { return *servable_.get(); }
  int64_t deadline_us() const { return deadline_us_; }
  int64_t start_us() const { return start_us_; }
  int priority() const { return priority_; }
  bool Expired(int64_t now_us) const { return deadline_us_ != 0 && now_us >= deadline_us_; }
  bool Cancelled() const { return is_cancelled_ && is_cancelled_(); }
  // Cancelled, and not because the deadline passed: gRPC cancels expired
  // calls too, and those are reported as DEADLINE_EXCEEDED.
  bool CallerGone() const { return !Expired(clock_->NowMicros()) && Cancelled(); }

  void ImageFailed(const absl::Status& status);
  // `logits` holds the image's num_classes values; `timing` its own parts.
  void ImageSucceeded(int index, const float* logits, int batch_size, const Timing& timing);

 private:
  void ImageDone();

  ServableUse servable_;
  AdmissionTicket ticket_;
  InferDone done_;
  const std::function<bool()> is_cancelled_;
  const int64_t top_k_;
  const int priority_;
  const int64_t start_us_;
  const int64_t deadline_us_;
  batcher::Clock* const clock_;
  InflightTracker* const inflight_;
  std::atomic<int> remaining_;
  // Each image writes its own row; read only by the last one.
  std::vector<float> logits_;
  std::mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  int batch_size_ ABSL_GUARDED_BY(mu_) = 0;
  Timing timing_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_CALL_STATE_H_
