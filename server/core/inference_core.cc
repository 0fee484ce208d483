#include "server/core/inference_core.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <opencv2/core.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ghostserve::core {

absl::Status CoreOptions::Validate() const {
  if (auto s = batching.Validate(); !s.ok()) return s;
  if (preprocess_threads < 1 || preprocess_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess threads must be in [1, 256], got ", preprocess_threads));
  }
  if (preprocess_queue < 1) {
    return absl::InvalidArgumentError("preprocess queue must be >= 1");
  }
  if (executors < 1 || executors > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("inference executors must be in [1, 64], got ", executors));
  }
  if (intra_op_threads < 0 || intra_op_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("inference threads must be in [0, 256], got ", intra_op_threads));
  }
  if (max_images_per_request < 1) {
    return absl::InvalidArgumentError("max images per request must be >= 1");
  }
  return absl::OkStatus();
}

std::vector<int64_t> Servable::input_shape() const {
  return {preprocess_.channels, preprocess_.crop_size, preprocess_.crop_size};
}

std::pair<std::shared_ptr<Servable::Slab>, int> Servable::ReserveRow() {
  std::lock_guard<std::mutex> lock(slab_mu_);
  const int64_t rows = batcher_->options().max_batch_size;
  if (slab_ == nullptr || next_row_ == rows) {
    const auto shape = input_shape();
    slab_ = std::make_shared<Slab>();
    slab_->rows =
        torch::empty({rows, shape[0], shape[1], shape[2]},
                     torch::TensorOptions().memory_format(at::MemoryFormat::ChannelsLast));
    slab_->id = next_slab_id_++;
    next_row_ = 0;
  }
  return {slab_, next_row_++};
}

std::vector<Prediction> TopK(const torch::Tensor& logits, int64_t k,
                             const std::vector<std::string>& labels) {
  torch::Tensor probs = torch::softmax(logits.to(torch::kDouble), 0);
  k = std::min<int64_t>(k, probs.size(0));
  auto [values, indices] = probs.topk(k);
  std::vector<Prediction> out;
  out.reserve(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    const int64_t idx = indices[i].item<int64_t>();
    std::string label = idx < static_cast<int64_t>(labels.size()) ? labels[static_cast<size_t>(idx)]
                                                                  : absl::StrCat("class_", idx);
    out.push_back({idx, std::move(label), static_cast<float>(values[i].item<double>())});
  }
  return out;
}

// One request's shared state; images finish into it from any thread.
struct InferenceCore::CallState {
  InferDone done;
  Servable* servable = nullptr;
  std::function<bool()> is_cancelled;
  int64_t start_us = 0;
  int64_t deadline_us = 0;
  torch::Tensor logits;
  std::atomic<int> remaining{0};
  std::mutex mu;
  absl::Status error;  // first failure, guarded by mu
  int batch_size = 0;  // guarded by mu
  Timing timing;       // guarded by mu

  bool Cancelled() const { return is_cancelled && is_cancelled(); }
  bool Expired(int64_t now_us) const { return deadline_us != 0 && now_us >= deadline_us; }

  // Records image `index`; returns true for the caller that finished the call.
  bool ImageDone(const absl::Status& status) {
    if (!status.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (error.ok()) error = status;
    }
    return remaining.fetch_sub(1) == 1;
  }
};

class InferenceCore::ImageTask : public batcher::BatchTask {
 public:
  ImageTask(InferenceCore* core, std::shared_ptr<CallState> call, int index, torch::Tensor input,
            int64_t preprocess_us, std::shared_ptr<Servable::Slab> slab, int row)
      : core_(core),
        call_(std::move(call)),
        index_(index),
        input_(std::move(input)),
        preprocess_us_(preprocess_us),
        slab_(std::move(slab)),
        row_(row) {
    deadline_us = call_->deadline_us;
  }
  int64_t group() const override { return slab_ ? slab_->id : -1; }
  const Servable::Slab* slab() const { return slab_.get(); }
  int row() const { return row_; }
  // gRPC also cancels a call whose deadline has passed; that is reported as
  // DEADLINE_EXCEEDED (the batcher's deadline check), not as a cancellation.
  bool IsCancelled() const override {
    return !call_->Expired(core_->clock_->NowMicros()) && call_->Cancelled();
  }
  void Fail(const absl::Status& status) override {
    if (call_->ImageDone(status)) core_->FinishCall(call_.get());
  }
  // Called by the batch worker with this image's logits.
  void Succeed(const torch::Tensor& row, int batch_size, int64_t queue_us, int64_t inference_us) {
    call_->logits[index_].copy_(row);
    {
      std::lock_guard<std::mutex> lock(call_->mu);
      if (call_->batch_size == 0) call_->batch_size = batch_size;
      Timing& t = call_->timing;
      t.preprocess_us = std::max(t.preprocess_us, preprocess_us_);
      t.queue_us = std::max(t.queue_us, queue_us);
      t.inference_us = std::max(t.inference_us, inference_us);
    }
    if (call_->ImageDone(absl::OkStatus())) core_->FinishCall(call_.get());
  }
  const torch::Tensor& input() const { return input_; }

 private:
  InferenceCore* core_;
  std::shared_ptr<CallState> call_;
  int index_;
  torch::Tensor input_;
  int64_t preprocess_us_;
  std::shared_ptr<Servable::Slab> slab_;  // keeps the rows alive until answered
  int row_;
};

absl::StatusOr<std::unique_ptr<InferenceCore>> InferenceCore::Create(
    const CoreOptions& options, std::vector<ModelSpec> models, batcher::Clock* clock,
    metrics::ServerMetrics* metrics) {
  if (auto s = options.Validate(); !s.ok()) return s;
  if (models.empty()) return absl::InvalidArgumentError("no models configured");
  std::unique_ptr<InferenceCore> core(new InferenceCore(options, clock, metrics));
  core->executor_ =
      std::make_unique<InferenceExecutor>(options.executors, options.intra_op_threads);
  for (auto& spec : models) {
    if (core->servables_.count(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat("model ", spec.name, " is configured twice"));
    }
    if (auto s = spec.preprocess.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model ", spec.name, ": ", s.message()));
    }
    if (spec.preprocess.channels != spec.load.net.in_channels) {
      return absl::InvalidArgumentError(
          absl::StrCat("model ", spec.name, ": preprocessing gives ", spec.preprocess.channels,
                       " channels, the network takes ", spec.load.net.in_channels));
    }
    if (!spec.labels.empty() &&
        static_cast<int64_t>(spec.labels.size()) != spec.load.net.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("model ", spec.name, ": ", spec.labels.size(),
                                                     " labels for ", spec.load.net.num_classes,
                                                     " classes"));
    }
    spec.load.name = spec.name;
    auto loaded = model::LoadModel(spec.load);
    if (!loaded.ok()) return loaded.status();
    auto servable = std::make_unique<Servable>();
    servable->name_ = spec.name;
    servable->model_ = std::move(*loaded);
    servable->preprocess_ = spec.preprocess;
    servable->labels_ = std::move(spec.labels);
    if (metrics != nullptr) {
      servable->metrics_ = metrics->ForModel(spec.name);
      servable->metrics_->weight_bytes->Set(
          static_cast<double>(servable->model_->inference->WeightBytes()));
    }
    batcher::BatcherOptions bo = options.batching;
    bo.name = spec.name;
    Servable* raw = servable.get();
    InferenceCore* core_raw = core.get();
    // Batch workers only form batches; the batch itself (gather, forward,
    // answers) runs on the shared executor.
    auto batcher = batcher::Batcher::Create(
        bo, clock,
        [core_raw, raw](std::vector<std::unique_ptr<batcher::BatchTask>> tasks) {
          core_raw->executor_->Run([&] { core_raw->ProcessBatch(raw, std::move(tasks)); });
        },
        nullptr, [raw] { return raw->preprocessing_.load() > 0; });
    if (!batcher.ok()) return batcher.status();
    servable->batcher_ = std::move(*batcher);
    core->servables_[spec.name] = std::move(servable);
  }
  core->preprocess_pool_ =
      std::make_unique<ThreadPool>(options.preprocess_threads, options.preprocess_queue,
                                   // Each preprocessing thread is one unit of parallelism; OpenCV's
                                   // own pool would oversubscribe the cores LibTorch uses.
                                   [] { cv::setNumThreads(1); });
  return core;
}

InferenceCore::~InferenceCore() {
  StopAccepting();
  // The pool feeds the batchers, so it finishes first; then each batcher
  // runs what it holds and joins.
  preprocess_pool_.reset();
  for (auto& [name, s] : servables_) s->batcher_.reset();
  executor_.reset();
}

absl::Status InferenceCore::Warmup() {
  std::mutex status_mu;
  absl::Status status;
  // On every executor, so each thread's OpenMP team and oneDNN state are
  // ready before the first request.
  executor_->RunOnEach([&] {
    absl::Status local;
    for (auto& [name, s] : servables_) {
      const auto shape = s->input_shape();
      torch::Tensor x =
          torch::zeros({s->batcher_->options().max_batch_size, shape[0], shape[1], shape[2]})
              .contiguous(at::MemoryFormat::ChannelsLast);
      // Twice: oneDNN picks and caches kernels on the first call per shape.
      for (int i = 0; i < 2 && local.ok(); ++i) {
        for (int64_t n = 1; n <= x.size(0) && local.ok(); n *= 2) {
          auto out = s->model_->inference->Forward(x.narrow(0, 0, n));
          if (!out.ok()) {
            local = absl::InternalError(
                absl::StrCat("warm-up of ", name, " failed: ", out.status().message()));
          }
        }
      }
    }
    std::lock_guard<std::mutex> lock(status_mu);
    if (status.ok()) status = local;
  });
  if (!status.ok()) return status;
  ready_ = true;
  return absl::OkStatus();
}

absl::StatusOr<const Servable*> InferenceCore::Find(const std::string& name) const {
  auto it = servables_.find(name);
  if (it == servables_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, s] : servables_) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("unknown model '", name.substr(0, 128),
                                            "'; served models: ", absl::StrJoin(names, ", ")));
  }
  return it->second.get();
}

std::vector<const Servable*> InferenceCore::servables() const {
  std::vector<const Servable*> out;
  for (const auto& [n, s] : servables_) out.push_back(s.get());
  return out;
}

void InferenceCore::StopAccepting() {
  // Only the front door closes: images of requests already accepted may
  // still be preprocessing and must reach their batcher. The batchers refuse
  // work themselves when they are destroyed.
  accepting_ = false;
}

bool InferenceCore::WaitIdle(int64_t timeout_us) {
  std::unique_lock<std::mutex> lock(idle_mu_);
  return idle_cv_.wait_for(lock, std::chrono::microseconds(timeout_us),
                           [this] { return inflight_.load() == 0; });
}

void InferenceCore::Infer(InferRequest request, InferDone done) {
  if (!accepting_) {
    done(absl::UnavailableError("server is draining; retry on another replica"));
    return;
  }
  auto found = servables_.find(request.model);
  if (found == servables_.end()) {
    done(Find(request.model).status());
    return;
  }
  Servable* servable = found->second.get();
  const size_t n = request.images.size();
  if (n == 0) {
    done(absl::InvalidArgumentError("request carries no image"));
    return;
  }
  if (n > static_cast<size_t>(options_.max_images_per_request)) {
    done(absl::ResourceExhaustedError(absl::StrCat("request carries ", n, " images; the limit is ",
                                                   options_.max_images_per_request)));
    return;
  }
  const auto shape = servable->input_shape();
  for (size_t i = 0; i < n; ++i) {
    const ImageInput& img = request.images[i];
    if (img.tensor.defined()) {
      if (img.tensor.sizes() != c10::IntArrayRef(shape) ||
          img.tensor.scalar_type() != torch::kFloat) {
        done(absl::InvalidArgumentError(
            absl::StrCat("image ", i, " tensor is ", c10::str(img.tensor.sizes()), " ",
                         c10::toString(img.tensor.scalar_type()), "; model ", servable->name(),
                         " takes float [", shape[0], ", ", shape[1], ", ", shape[2], "]")));
        return;
      }
    } else if (img.encoded.empty()) {
      done(absl::InvalidArgumentError(absl::StrCat("image ", i, " is empty")));
      return;
    } else if (img.encoded.size() > options_.limits.max_bytes) {
      done(absl::ResourceExhaustedError(absl::StrCat("image ", i, " is ", img.encoded.size(),
                                                     " bytes; the limit is ",
                                                     options_.limits.max_bytes)));
      return;
    }
  }

  auto call = std::make_shared<CallState>();
  call->done = std::move(done);
  call->servable = servable;
  call->is_cancelled = std::move(request.is_cancelled);
  call->start_us = clock_->NowMicros();
  call->deadline_us = request.deadline_us;
  call->logits = torch::empty({static_cast<int64_t>(n), servable->num_classes()});
  call->remaining = static_cast<int>(n);
  inflight_.fetch_add(1);
  // Re-checked after counting: a drain that began since the check at the top
  // either sees this request in WaitIdle or is seen here.
  if (!accepting_) {
    if (inflight_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(idle_mu_);
      idle_cv_.notify_all();
    }
    call->done(absl::UnavailableError("server is draining; retry on another replica"));
    return;
  }
  if (metrics_ != nullptr) metrics_->inflight()->Increment();

  for (size_t i = 0; i < n; ++i) {
    const int index = static_cast<int>(i);
    ImageInput img = request.images[i];
    if (img.tensor.defined()) {
      SubmitImage(servable, call, index, img.tensor, 0);
      continue;
    }
    servable->preprocessing_.fetch_add(1);
    const bool scheduled = preprocess_pool_->TrySchedule([this, servable, call, index,
                                                          bytes = img.encoded] {
      // Leaves the "more coming" count before the image is submitted (or
      // dropped), so the batcher never waits for an image that is not coming.
      auto done_preprocessing = [servable] {
        if (servable->preprocessing_.fetch_sub(1) == 1) servable->batcher_->Poke();
      };
      // Deadline first: gRPC cancels expired calls too, and those should
      // be reported as DEADLINE_EXCEEDED.
      if (call->Expired(clock_->NowMicros())) {
        done_preprocessing();
        if (call->ImageDone(absl::DeadlineExceededError("deadline passed before preprocessing"))) {
          FinishCall(call.get());
        }
        return;
      }
      if (call->Cancelled()) {
        done_preprocessing();
        if (call->ImageDone(absl::CancelledError("request cancelled"))) FinishCall(call.get());
        return;
      }
      const int64_t t0 = clock_->NowMicros();
      auto [slab, row] = servable->ReserveRow();
      torch::Tensor input = slab->rows[row];  // [C, H, W], HWC in memory
      absl::Status st = preprocess::PreprocessInto(bytes, servable->preprocess(), options_.limits,
                                                   input.data_ptr<float>());
      const int64_t t1 = clock_->NowMicros();
      if (servable->metrics_ != nullptr) {
        servable->metrics_->preprocess_seconds->Observe((t1 - t0) * 1e-6);
      }
      if (!st.ok()) {
        done_preprocessing();
        if (call->ImageDone(st)) FinishCall(call.get());
        return;
      }
      servable->preprocessing_.fetch_sub(1);
      SubmitImage(servable, call, index, std::move(input), t1 - t0, std::move(slab), row);
    });
    if (!scheduled) {
      if (servable->preprocessing_.fetch_sub(1) == 1) servable->batcher_->Poke();
      if (call->ImageDone(absl::UnavailableError("preprocessing queue is full; retry later"))) {
        FinishCall(call.get());
      }
    }
  }
}

void InferenceCore::SubmitImage(Servable* servable, std::shared_ptr<CallState> call, int index,
                                torch::Tensor input, int64_t preprocess_us,
                                std::shared_ptr<Servable::Slab> slab, int row) {
  std::unique_ptr<batcher::BatchTask> task = std::make_unique<ImageTask>(
      this, call, index, std::move(input), preprocess_us, std::move(slab), row);
  absl::Status s = servable->batcher_->Submit(&task);
  if (servable->metrics_ != nullptr) {
    servable->metrics_->queue_depth->Set(servable->batcher_->QueueDepth());
  }
  if (!s.ok()) task->Fail(s);
}

void InferenceCore::ProcessBatch(Servable* servable,
                                 std::vector<std::unique_ptr<batcher::BatchTask>> tasks) {
  const int n = static_cast<int>(tasks.size());
  if (servable->metrics_ != nullptr) {
    servable->metrics_->queue_depth->Set(servable->batcher_->QueueDepth());
  }
  const int64_t start = clock_->NowMicros();
  torch::Tensor logits;
  absl::Status status;
  // Rows in slab order: a batch whose images sit in consecutive rows of one
  // slab (the usual case) runs on that slab without a copy.
  std::sort(tasks.begin(), tasks.end(), [](const auto& a, const auto& b) {
    return static_cast<ImageTask*>(a.get())->row() < static_cast<ImageTask*>(b.get())->row();
  });
  try {
    const auto* first = static_cast<ImageTask*>(tasks.front().get());
    bool consecutive = first->slab() != nullptr;
    for (int i = 1; consecutive && i < n; ++i) {
      const auto* t = static_cast<ImageTask*>(tasks[static_cast<size_t>(i)].get());
      consecutive = t->slab() == first->slab() && t->row() == first->row() + i;
    }
    torch::Tensor batch;
    if (consecutive) {
      batch = first->slab()->rows.narrow(0, first->row(), n);
    } else {
      // Tensor inputs (KServe FP32), or a slab with a dropped image in the
      // middle: gather. Preprocessed images are HWC in memory, so each copy
      // into the channels-last batch is one contiguous block.
      const auto shape = servable->input_shape();
      batch = torch::empty({n, shape[0], shape[1], shape[2]},
                           torch::TensorOptions().memory_format(at::MemoryFormat::ChannelsLast));
      for (int i = 0; i < n; ++i) {
        batch[i].copy_(static_cast<ImageTask*>(tasks[static_cast<size_t>(i)].get())->input());
      }
    }
    auto out = servable->model_->inference->Forward(batch);
    if (out.ok()) {
      logits = std::move(*out);
    } else {
      status = out.status();
    }
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("batch failed: ", e.what()));
  }
  const int64_t end = clock_->NowMicros();
  if (servable->metrics_ != nullptr) {
    servable->metrics_->inference_seconds->Observe((end - start) * 1e-6);
    servable->metrics_->batch_size->Observe(n);
  }
  for (int i = 0; i < n; ++i) {
    auto* task = static_cast<ImageTask*>(tasks[static_cast<size_t>(i)].get());
    if (!status.ok()) {
      task->Fail(status);
      continue;
    }
    const int64_t queue_us = start - task->enqueue_us;
    if (servable->metrics_ != nullptr) {
      servable->metrics_->queue_seconds->Observe(queue_us * 1e-6);
    }
    task->Succeed(logits[i], n, queue_us, end - start);
  }
}

void InferenceCore::FinishCall(CallState* call) {
  absl::Status error;
  InferResult result;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    error = call->error;
    result.batch_size = call->batch_size;
    result.timing = call->timing;
  }
  result.timing.total_us = clock_->NowMicros() - call->start_us;
  InferDone done = std::move(call->done);
  // The gauge drops before the answer goes out, so a scrape that follows a
  // client's last response never sees it still in flight. The drain counter
  // drops after, so a drain never closes the transport under an answer.
  if (metrics_ != nullptr) metrics_->inflight()->Decrement();
  if (error.ok()) {
    result.logits = call->logits;
    done(std::move(result));
  } else {
    done(error);
  }
  if (inflight_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(idle_mu_);
    idle_cv_.notify_all();
  }
}

}  // namespace ghostserve::core
