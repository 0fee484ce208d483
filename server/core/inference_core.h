// The serving core, independent of gRPC: the configured models, each with its
// preprocessing, labels and dynamic batcher, plus the bounded preprocessing
// pool. The gRPC services in server/service/ translate calls into Infer.
//
// One request's path:
//   Infer (validate model, inputs, deadline)
//     -> preprocessing pool (decode + resize + crop + normalise per image)
//     -> the model's Batcher (max batch size, max delay, bounded queue)
//     -> batch worker: gather into a channels-last [N,C,H,W] tensor, Forward
//     -> each image's logits row back to its request; the request's callback
//        runs once all its images are done.
#ifndef GHOSTSERVE_SERVER_CORE_INFERENCE_CORE_H_
#define GHOSTSERVE_SERVER_CORE_INFERENCE_CORE_H_

#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/loaded_model.h"
#include "model/threading.h"
#include "server/batcher/batcher.h"
#include "server/batcher/clock.h"
#include "server/core/inference_executor.h"
#include "server/core/thread_pool.h"
#include "server/metrics/metrics.h"
#include "server/preprocess/image.h"

namespace ghostserve::core {

// How to build one served model.
struct ModelSpec {
  std::string name;
  model::LoadModelOptions load;
  preprocess::PreprocessConfig preprocess;
  // One per class; empty means "class_<index>".
  std::vector<std::string> labels;
};

struct CoreOptions {
  // Per-model batching; `name` is replaced by the model's name.
  batcher::BatcherOptions batching;
  // Threads decoding and preprocessing images (shared by all models).
  int preprocess_threads = 1;
  // Images waiting for a preprocessing thread; beyond it requests are refused
  // with UNAVAILABLE.
  int preprocess_queue = 512;
  preprocess::ImageLimits limits;
  // Threads running forward passes, shared by all models (see
  // InferenceExecutor). executors * intra_op_threads should not exceed the
  // CPUs, or OpenMP stops spinning and inference slows down.
  int executors = 1;
  // LibTorch intra-op (OpenMP) threads per executor; 0 = CPUs available.
  int intra_op_threads = 0;
  // Most images one request may carry (KServe batches).
  int max_images_per_request = 64;

  absl::Status Validate() const;
};

// A served model. Immutable after creation except for its batcher.
class Servable {
 public:
  const std::string& name() const { return name_; }
  const model::LoadedModel& model() const { return *model_; }
  const preprocess::PreprocessConfig& preprocess() const { return preprocess_; }
  const std::vector<std::string>& labels() const { return labels_; }
  int64_t num_classes() const { return model_->options.num_classes; }
  // Shape of one preprocessed image: [C, H, W].
  std::vector<int64_t> input_shape() const;
  batcher::Batcher* batcher() const { return batcher_.get(); }

 private:
  friend class InferenceCore;
  std::string name_;
  std::unique_ptr<model::LoadedModel> model_;
  preprocess::PreprocessConfig preprocess_;
  std::vector<std::string> labels_;
  metrics::ModelMetrics* metrics_ = nullptr;
  // Images of this model being decoded right now: the batcher's hint that a
  // partial batch may still grow.
  std::atomic<int> preprocessing_{0};
  // Preprocessing writes each image straight into a row of a "slab", a
  // channels-last [max_batch, C, H, W] tensor; a batch of consecutive rows
  // of one slab runs without any copy. Rows are handed out in order.
  struct Slab {
    torch::Tensor rows;
    int64_t id;
  };
  std::pair<std::shared_ptr<Slab>, int> ReserveRow();
  std::mutex slab_mu_;
  std::shared_ptr<Slab> slab_;  // guarded by slab_mu_
  int next_row_ = 0;            // guarded by slab_mu_
  int64_t next_slab_id_ = 0;    // guarded by slab_mu_
  std::unique_ptr<batcher::Batcher> batcher_;
};

// One image of a request: encoded bytes, preprocessed by the core, or an
// already preprocessed [C, H, W] float tensor (used when defined).
struct ImageInput {
  // Borrowed: must stay valid until the request's callback has run.
  std::string_view encoded;
  torch::Tensor tensor;
};

struct InferRequest {
  std::string model;
  std::vector<ImageInput> images;
  // Absolute, on the core's clock; 0 = no deadline.
  int64_t deadline_us = 0;
  // Polled before preprocessing and before batching; may be null. Must be
  // thread-safe and stay callable until the callback has run.
  std::function<bool()> is_cancelled;
};

// Microseconds. For several images, the largest over them.
struct Timing {
  int64_t preprocess_us = 0;
  int64_t queue_us = 0;
  int64_t inference_us = 0;
  int64_t total_us = 0;
};

struct InferResult {
  torch::Tensor logits;  // [N, num_classes] float32
  int batch_size = 0;    // size of the batch the first image ran in
  Timing timing;
};

using InferDone = std::function<void(absl::StatusOr<InferResult>)>;

struct Prediction {
  int64_t class_index;
  std::string label;
  float score;  // softmax probability
};

// Softmax over `logits` ([num_classes]) and the k highest, best first.
std::vector<Prediction> TopK(const torch::Tensor& logits, int64_t k,
                             const std::vector<std::string>& labels);

// Thread-safe. Infer never blocks on inference.
class InferenceCore {
 public:
  // Loads and compiles every model and starts its batcher. `clock` and
  // `metrics` (may be null) are borrowed and must outlive the core.
  static absl::StatusOr<std::unique_ptr<InferenceCore>> Create(const CoreOptions& options,
                                                               std::vector<ModelSpec> models,
                                                               batcher::Clock* clock,
                                                               metrics::ServerMetrics* metrics);
  // Stops accepting, answers everything queued, joins all threads.
  ~InferenceCore();

  // Runs a full batch through every model once (first-call allocations and
  // oneDNN kernel selection), then marks the core ready.
  absl::Status Warmup();
  bool ready() const { return ready_.load(); }

  // Answers through `done` exactly once: on the calling thread for errors
  // found up front (NotFound model, InvalidArgument input, Unavailable when
  // full or draining), otherwise on a preprocessing or batch thread.
  void Infer(InferRequest request, InferDone done);

  // NotFound naming the served models if `name` is not one of them.
  absl::StatusOr<const Servable*> Find(const std::string& name) const;
  std::vector<const Servable*> servables() const;

  // Refuse new requests from now on (draining); accepted ones still finish.
  void StopAccepting();
  bool accepting() const { return accepting_.load(); }
  // Blocks until no request is in flight or `timeout_us` passes (real time).
  // Returns true when idle.
  bool WaitIdle(int64_t timeout_us);
  int inflight() const { return inflight_.load(); }

  batcher::Clock* clock() const { return clock_; }
  const CoreOptions& options() const { return options_; }

 private:
  struct CallState;
  class ImageTask;

  InferenceCore(const CoreOptions& options, batcher::Clock* clock, metrics::ServerMetrics* metrics)
      : options_(options), clock_(clock), metrics_(metrics) {}
  void ProcessBatch(Servable* servable, std::vector<std::unique_ptr<batcher::BatchTask>> tasks);
  // `slab`/`row` locate the image when it was preprocessed into a slab
  // (then `input` is that row); otherwise slab is null.
  void SubmitImage(Servable* servable, std::shared_ptr<CallState> call, int index,
                   torch::Tensor input, int64_t preprocess_us,
                   std::shared_ptr<Servable::Slab> slab = nullptr, int row = -1);
  void FinishCall(CallState* call);

  const CoreOptions options_;
  batcher::Clock* const clock_;
  metrics::ServerMetrics* const metrics_;
  std::map<std::string, std::unique_ptr<Servable>> servables_;
  std::unique_ptr<InferenceExecutor> executor_;
  std::unique_ptr<ThreadPool> preprocess_pool_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> accepting_{true};
  std::atomic<int> inflight_{0};
  std::mutex idle_mu_;
  std::condition_variable idle_cv_;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_INFERENCE_CORE_H_
