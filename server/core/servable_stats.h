// Cumulative per-servable statistics in Triton's terms (ModelStatistics of
// the KServe/Triton gRPC extension): requests that succeeded or failed after
// being accepted, with their time in queue, input preparation (waiting for
// and doing the decode), model execution and output; images inferred; model
// executions (batches), and executions per batch size. Thread-safe.
#ifndef GHOSTSERVE_SERVER_CORE_SERVABLE_STATS_H_
#define GHOSTSERVE_SERVER_CORE_SERVABLE_STATS_H_

#include <cstdint>
#include <map>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "server/core/request.h"

namespace ghostserve::core {

struct StatDuration {
  uint64_t count = 0;
  uint64_t ns = 0;
  void Add(int64_t us) {
    ++count;
    ns += static_cast<uint64_t>(us < 0 ? 0 : us) * 1000;
  }
};

struct ServableStatsSnapshot {
  uint64_t last_inference_ms = 0;  // wall clock, ms since the epoch; 0 = never
  uint64_t inference_count = 0;    // images inferred
  uint64_t execution_count = 0;    // batches run
  StatDuration success, fail, queue, compute_input, compute_infer, compute_output;
  struct Batch {
    StatDuration compute_input, compute_infer, compute_output;
  };
  std::map<uint64_t, Batch> batches;  // by batch size
};

class ServableStats {
 public:
  // One request answered: OK with `timing`, or failed after `total_us`.
  void RequestSucceeded(const Timing& timing, uint64_t wall_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    s_.success.Add(timing.total_us);
    s_.queue.Add(timing.queue_us);
    s_.compute_input.Add(timing.preprocess_wait_us + timing.preprocess_us);
    s_.compute_infer.Add(timing.inference_us);
    // Logits to the caller's result: done on the executor with the batch.
    s_.compute_output.Add(0);
    s_.last_inference_ms = wall_ms;
  }
  void RequestFailed(int64_t total_us) {
    std::lock_guard<std::mutex> lock(mu_);
    s_.fail.Add(total_us);
  }
  // One batch of `n` images ran successfully in `infer_us`.
  void BatchRan(int n, int64_t infer_us) {
    std::lock_guard<std::mutex> lock(mu_);
    s_.inference_count += static_cast<uint64_t>(n);
    ++s_.execution_count;
    auto& b = s_.batches[static_cast<uint64_t>(n)];
    b.compute_input.Add(0);
    b.compute_infer.Add(infer_us);
    b.compute_output.Add(0);
  }
  ServableStatsSnapshot Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return s_;
  }

 private:
  mutable std::mutex mu_;
  ServableStatsSnapshot s_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_SERVABLE_STATS_H_
