// The serving core, independent of gRPC and of the inference engine: the
// servables (model, preprocessing, labels, batcher), admission and
// validation, the bounded preprocessing pool and the executors that run
// batches. Every front-end (server/service/) turns its requests into
// InferRequests and InferResults into its responses.
//
// One request's path:
//   Infer: admission (draining?), the servable, validation of the request
//     -> preprocessing pool (decode + resize + crop + normalise into a slab row)
//        or, for a preprocessed tensor, a copy into a slab row
//     -> the servable's Batcher<ImageTask> (max batch size, max delay, queue bound)
//     -> executor thread: RunBatch (batch_runner.h) -> Model::Forward
//     -> CallState: each image's logits; the last image answers the caller.
#ifndef GHOSTSERVE_SERVER_CORE_INFERENCE_CORE_H_
#define GHOSTSERVE_SERVER_CORE_INFERENCE_CORE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/batcher/batcher.h"
#include "server/batcher/clock.h"
#include "server/core/admission.h"
#include "server/core/call_state.h"
#include "server/core/core_options.h"
#include "server/core/inference_executor.h"
#include "server/core/model.h"
#include "server/core/request.h"
#include "server/core/servable.h"
#include "server/core/servable_registry.h"
#include "server/core/thread_pool.h"
#include "server/metrics/metrics.h"

namespace ghostserve::core {

// Thread-safe. Infer never blocks on inference.
class InferenceCore {
 public:
  // Starts the executors and the preprocessing pool; no servables yet.
  // `clock` and `metrics` (may be null) are borrowed and must outlive the
  // core. `executor_threads(n)` (may be null) gives the calling executor
  // thread n intra-op threads (0 = all CPUs): first on each executor thread,
  // then whenever the thread plan changes its count.
  static absl::StatusOr<std::unique_ptr<InferenceCore>> Create(
      const CoreOptions& options, batcher::Clock* clock, metrics::ServerMetrics* metrics,
      std::function<void(int)> executor_threads = nullptr);
  // Stops accepting, answers everything accepted, joins all threads.
  ~InferenceCore();

  // Serves `model` under spec.name and spec.version from now on. Once the
  // core is ready, the servable is warmed before it takes traffic.
  // InvalidArgument for a spec that does not fit the model; AlreadyExists
  // for a name and version in use.
  absl::Status AddServable(ServableSpec spec, std::unique_ptr<Model> model);
  // Like AddServable, but in place of the servable of the same name and
  // version (NotFound if none): new requests go to the new one once it is
  // warm; returns once the old one's requests have been answered.
  absl::Status ReplaceServable(ServableSpec spec, std::unique_ptr<Model> model);
  // Stops serving `name` at `version` (0: every version): new requests get
  // NotFound, or the next-latest version; returns once its accepted
  // requests have been answered.
  absl::Status RemoveServable(const std::string& name, int64_t version = 0);

  // Runs every batch size up to the maximum through every servable on every
  // executor (first-call allocations, kernel selection, the planned engine's
  // plan per batch size), then the powers of two again to seed the batch
  // cost model, then marks the core ready.
  absl::Status Warmup();
  const InferenceExecutor& executor() const { return *executor_; }
  bool ready() const { return ready_.load(); }

  // Answers through `done` exactly once: on the calling thread for errors
  // found up front (draining, unknown model, invalid request), otherwise on a
  // preprocessing or executor thread.
  void Infer(InferRequest request, InferDone done);

  // `name` at `version` ("" = the latest). NotFound naming the served
  // models, or the model's versions. Every front-end asks this, for
  // inference, readiness, metadata, config and statistics alike.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(const std::string& name,
                                                       const std::string& version = "") const {
    return registry_->Find(name, version);
  }
  // Every servable, by name then version.
  std::vector<std::shared_ptr<const Servable>> servables() const { return registry_->List(); }
  // The versions of `name` served, ascending.
  std::vector<int64_t> versions(const std::string& name) const { return registry_->Versions(name); }

  // Refuse new requests from now on (draining); accepted ones still finish.
  void StopAccepting() { accepting_ = false; }
  bool accepting() const { return accepting_.load(); }
  // Blocks until no request is in flight or `timeout_us` passes (real time).
  // Returns true when idle.
  bool WaitIdle(int64_t timeout_us) { return inflight_.WaitIdle(timeout_us); }
  int inflight() const { return inflight_.count(); }
  // When the last inference request arrived (clock_ time; 0 if none has),
  // accepted or not: a drain waits for arrivals to stop before the
  // transports close.
  int64_t last_arrival_us() const { return last_arrival_us_.load(); }

  batcher::Clock* clock() const { return clock_; }
  const CoreOptions& options() const { return options_; }

 private:
  InferenceCore(const CoreOptions& options, batcher::Clock* clock, metrics::ServerMetrics* metrics);
  void StartPreprocessing(const std::shared_ptr<CallState>& call, int index,
                          std::string_view encoded);
  void Preprocess(std::shared_ptr<CallState> call, int index, std::string_view encoded);
  // Image `index` of the request's [N, C, H, W] tensor `images`.
  void SubmitTensor(const std::shared_ptr<CallState>& call, int index, const void* images);
  void Submit(const std::shared_ptr<CallState>& call, int index, SlabRow row,
              int64_t preprocess_wait_us, int64_t preprocess_us, int64_t ready_us);
  // Runs the warm-up batches through `servable` on every executor and seeds
  // its batch cost model.
  absl::Status Warm(const Servable& servable);
  // A servable for `spec`, warmed if the core is ready.
  absl::StatusOr<std::shared_ptr<Servable>> MakeServable(ServableSpec spec,
                                                         std::unique_ptr<Model> model);

  const CoreOptions options_;
  batcher::Clock* const clock_;
  metrics::ServerMetrics* const metrics_;
  InflightTracker inflight_;
  Admission admission_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> accepting_{true};
  std::atomic<int64_t> last_arrival_us_{0};
  std::unique_ptr<InferenceExecutor> executor_;
  std::unique_ptr<ServableRegistry> registry_;
  std::unique_ptr<ThreadPool> preprocess_pool_;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_INFERENCE_CORE_H_
