// One served model: the model, how its images are preprocessed, its labels,
// its batcher and batch buffers, and a count of the requests using it.
#ifndef GHOSTSERVE_SERVER_CORE_SERVABLE_H_
#define GHOSTSERVE_SERVER_CORE_SERVABLE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "server/batcher/batcher.h"
#include "server/batcher/clock.h"
#include "server/core/cost_model.h"
#include "server/core/image_task.h"
#include "server/core/model.h"
#include "server/core/servable_stats.h"
#include "server/core/slab.h"
#include "server/metrics/metrics.h"
#include "server/preprocess/image_decode.h"

namespace ghostserve::core {

// Decodes and preprocesses one encoded image into `hwc` ([H, W, C] floats of
// the servable's input shape). Runs on a preprocessing thread; thread-safe.
using PreprocessFn = std::function<absl::Status(std::string_view encoded, float* hwc)>;

struct ServableSpec {
  std::string name;
  // A positive integer (servable_registry.h); models configured by flag
  // are version 1, a model repository's come from its version directories.
  int64_t version = 1;
  preprocess::PreprocessConfig preprocess;
  // One per class; empty means "class_<index>".
  std::vector<std::string> labels;
  // Null: preprocess::PreprocessInto with `preprocess` and the core's limits.
  PreprocessFn preprocess_fn;
};

// Runs one formed batch of a servable (the core dispatches it to an executor).
class Servable;
using DispatchFn = std::function<void(Servable*, std::vector<std::unique_ptr<ImageTask>>)>;

// Immutable after Create except for its batcher, slabs and counters, which
// are thread-safe. The destructor runs what its batcher holds and joins it;
// never destroy a servable on one of its own batch threads.
class Servable {
 public:
  // `clock` must outlive the servable; `metrics` (may be null) too.
  static absl::StatusOr<std::unique_ptr<Servable>> Create(
      ServableSpec spec, std::unique_ptr<Model> model, const batcher::BatcherOptions& batching,
      batcher::Clock* clock, metrics::ModelMetrics* metrics, DispatchFn dispatch);
  ~Servable();

  const std::string& name() const { return spec_.name; }
  int64_t version() const { return spec_.version; }
  const Model& model() const { return *model_; }
  const ModelInfo& info() const { return model_->info(); }
  const preprocess::PreprocessConfig& preprocess() const { return spec_.preprocess; }
  const std::vector<std::string>& labels() const { return spec_.labels; }
  int64_t num_classes() const { return model_->info().num_classes; }
  // Shape of one preprocessed image: [C, H, W].
  std::vector<int64_t> input_shape() const;
  // Floats in one preprocessed image.
  int64_t image_floats() const;
  int max_batch_size() const { return batcher_->options().max_batch_size; }
  metrics::ModelMetrics* metrics() const { return metrics_; }

  batcher::Batcher<ImageTask>& batcher() const { return *batcher_; }
  SlabRow ReserveRow() { return slabs_->Reserve(); }
  absl::Status Preprocess(std::string_view encoded, float* hwc) const {
    return spec_.preprocess_fn(encoded, hwc);
  }

  // Images of this servable being preprocessed: the batcher's hint that a
  // partial batch may still grow. EndPreprocessing wakes the batcher when the
  // last one ends.
  void BeginPreprocessing() { preprocessing_.fetch_add(1); }
  void EndPreprocessing();

  // Requests using this servable (see ServableUse). WaitUnused blocks until
  // there are none.
  void WaitUnused();

  // The admission budget (admission.h): images accepted and not yet
  // answered, at most batching.max_queue_size waiting plus the batches
  // running (max_batch_size * num_workers). TryAdmit takes `images` of it
  // all or nothing.
  bool TryAdmit(int images);
  void Unadmit(int images);
  int admitted() const { return admitted_.load(); }
  int image_budget() const { return image_budget_; }

  // Batch and preprocessing costs, learned from this servable's own work.
  CostModel& costs() const { return *costs_; }
  // Triton-style cumulative statistics (ModelStatistics).
  ServableStats& stats() const { return stats_; }

  // The adaptive thread plan (inference_executor.h), measured at warm-up:
  // a lone batch-1 forward with all threads and single-threaded (0 = not
  // measured), and whether a lone batch of this model should get all threads
  // (only when that measured at least 10% faster).
  struct LoneBatchCost {
    int64_t single_thread_us = 0;
    int64_t all_threads_us = 0;
    bool use_all_threads = false;
  };
  LoneBatchCost lone_batch_cost() const {
    std::lock_guard<std::mutex> lock(lone_mu_);
    return lone_batch_cost_;
  }
  void set_lone_batch_cost(const LoneBatchCost& cost) const {
    std::lock_guard<std::mutex> lock(lone_mu_);
    lone_batch_cost_ = cost;
  }

 private:
  friend class ServableUse;
  Servable() = default;
  void AddUse();
  void ReleaseUse();

  ServableSpec spec_;
  std::unique_ptr<Model> model_;
  metrics::ModelMetrics* metrics_ = nullptr;
  std::atomic<int> preprocessing_{0};
  int image_budget_ = 0;
  std::atomic<int> admitted_{0};
  std::mutex use_mu_;
  std::condition_variable unused_cv_;
  int uses_ ABSL_GUARDED_BY(use_mu_) = 0;
  mutable ServableStats stats_;
  mutable std::mutex lone_mu_;
  mutable LoneBatchCost lone_batch_cost_ ABSL_GUARDED_BY(lone_mu_);
  std::unique_ptr<SlabAllocator> slabs_;
  std::unique_ptr<CostModel> costs_;
  // Last: destroyed first, so its threads are joined while the rest lives.
  std::unique_ptr<batcher::Batcher<ImageTask>> batcher_;
};

// One request's claim on a servable: while any exists, ServableRegistry::
// Remove waits. Movable; releasing is the last thing it does with the
// servable, so the servable may be destroyed right after.
class ServableUse {
 public:
  ServableUse() = default;
  explicit ServableUse(Servable* s) : s_(s) {
    if (s_ != nullptr) s_->AddUse();
  }
  ServableUse(ServableUse&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  ServableUse& operator=(ServableUse&& o) noexcept;
  ServableUse(const ServableUse&) = delete;
  ServableUse& operator=(const ServableUse&) = delete;
  ~ServableUse() {
    if (s_ != nullptr) s_->ReleaseUse();
  }
  Servable* get() const { return s_; }
  Servable* operator->() const { return s_; }

 private:
  Servable* s_ = nullptr;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_SERVABLE_H_
