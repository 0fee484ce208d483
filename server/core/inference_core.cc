#include "server/core/inference_core.h"

#include <cstring>
#include <mutex>
#include <opencv2/core.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/batch_runner.h"
#include "server/core/request_checks.h"

namespace ghostserve::core {
namespace {

absl::Status Draining() {
  return absl::UnavailableError("server is draining; retry on another replica");
}

}  // namespace

InferenceCore::InferenceCore(const CoreOptions& options, batcher::Clock* clock,
                             metrics::ServerMetrics* metrics)
    : options_(options),
      clock_(clock),
      metrics_(metrics),
      inflight_(metrics != nullptr ? metrics->inflight() : nullptr),
      admission_(options.max_input_bytes, metrics) {}

absl::StatusOr<std::unique_ptr<InferenceCore>> InferenceCore::Create(
    const CoreOptions& options, batcher::Clock* clock, metrics::ServerMetrics* metrics,
    std::function<void(int)> executor_threads) {
  if (auto s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("the core needs a clock");
  std::unique_ptr<InferenceCore> core(new InferenceCore(options, clock, metrics));
  ExecutorPlan plan;
  plan.executors = options.executors;
  plan.threads_per_executor = options.intra_op_threads;
  plan.adaptive = options.adaptive_threads;
  plan.hold_us = options.plan_hold_us;
  std::function<void(bool)> on_switch;
  if (metrics != nullptr && plan.adaptive) {
    metrics->SetThreadPlan(/*wide=*/true, /*switched=*/false);
    on_switch = [metrics](bool wide) { metrics->SetThreadPlan(wide, /*switched=*/true); };
  }
  core->executor_ =
      std::make_unique<InferenceExecutor>(plan, std::move(executor_threads), std::move(on_switch));
  core->registry_ = std::make_unique<ServableRegistry>();
  core->preprocess_pool_ =
      std::make_unique<ThreadPool>(options.preprocess_threads, options.preprocess_queue,
                                   // Each preprocessing thread is one unit of parallelism; OpenCV's
                                   // own pool would oversubscribe the cores inference uses.
                                   [] { cv::setNumThreads(1); });
  return core;
}

InferenceCore::~InferenceCore() {
  StopAccepting();
  // The pool feeds the batchers, so it finishes first; then each servable's
  // batcher runs what it holds on the executors and joins; then the executors.
  preprocess_pool_.reset();
  registry_.reset();
  executor_.reset();
}

absl::StatusOr<std::shared_ptr<Servable>> InferenceCore::MakeServable(
    ServableSpec spec, std::unique_ptr<Model> model) {
  if (!spec.preprocess_fn) {
    spec.preprocess_fn = [config = spec.preprocess, limits = options_.limits](
                             std::string_view encoded, float* hwc) {
      return preprocess::PreprocessInto(encoded, config, limits, hwc);
    };
  }
  metrics::ModelMetrics* m = metrics_ != nullptr ? metrics_->ForModel(spec.name) : nullptr;
  auto servable =
      Servable::Create(std::move(spec), std::move(model), options_.batching, clock_, m,
                       [this](Servable* s, std::vector<std::unique_ptr<ImageTask>> tasks) {
                         // Batch threads only form batches; the batch runs on an executor.
                         executor_->Run([&] { RunBatch(*s, std::move(tasks), *clock_); },
                                        s->lone_batch_cost().use_all_threads);
                       });
  if (!servable.ok()) return servable.status();
  if (ready()) {
    if (auto s = Warm(**servable); !s.ok()) return s;
  }
  return std::shared_ptr<Servable>(std::move(*servable));
}

absl::Status InferenceCore::AddServable(ServableSpec spec, std::unique_ptr<Model> model) {
  if (registry_->Find(spec.name, absl::StrCat(spec.version)).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("model ", spec.name, " version ", spec.version, " is already served"));
  }
  auto servable = MakeServable(std::move(spec), std::move(model));
  if (!servable.ok()) return servable.status();
  return registry_->Add(std::move(*servable));
}

absl::Status InferenceCore::ReplaceServable(ServableSpec spec, std::unique_ptr<Model> model) {
  if (auto found = registry_->Find(spec.name, absl::StrCat(spec.version)); !found.ok()) {
    return found.status();
  }
  auto servable = MakeServable(std::move(spec), std::move(model));
  if (!servable.ok()) return servable.status();
  auto old = registry_->Replace(std::move(*servable));
  return old.status();  // the old one is destroyed here, on the caller's thread
}

absl::Status InferenceCore::RemoveServable(const std::string& name, int64_t version) {
  std::vector<int64_t> versions{version};
  if (version == 0) versions = registry_->Versions(name);
  if (versions.empty()) return registry_->Find(name).status();
  for (int64_t v : versions) {
    auto removed = registry_->Remove(name, v);
    if (!removed.ok()) return removed.status();
  }  // each destroyed here, on the caller's thread
  return absl::OkStatus();
}

absl::Status InferenceCore::Warm(const Servable& servable) {
  std::mutex mu;
  absl::Status status;
  Servable::LoneBatchCost lone;
  // On every executor with the threads each runs with, so each thread's
  // OpenMP team and kernel caches are ready before the first request; for
  // the adaptive plan, a lone batch of 1 is then timed on executor 0 alone,
  // single-threaded and with all threads.
  //
  // Every batch size up to the largest runs once, on every team size: the
  // planned engine builds a plan per batch size and team size on first use
  // (50-450 ms for GhostNet on 2 EPYC cores), which no request should wait
  // for.
  executor_->RunOnEach([&](int threads, bool alone) {
    const int rows = servable.max_batch_size();
    const auto shape = servable.input_shape();
    Slab zeros(rows, servable.image_floats(), -1);
    std::memset(zeros.row(0), 0, sizeof(float) * rows * servable.image_floats());
    std::vector<float> logits(static_cast<size_t>(rows * servable.num_classes()));
    absl::Status local;
    auto forward = [&](int n) {
      const int64_t start = clock_->NowMicros();
      local = servable.model().Forward(zeros.row(0), n, shape[1], shape[2], logits.data());
      return clock_->NowMicros() - start;
    };
    int64_t best = -1;
    const bool every = options_.warm_every_batch_size;
    if (!alone) {
      for (int n = 1; n <= rows && local.ok(); n = every ? n + 1 : 2 * n) forward(n);
      // Again at the powers of two, now warm, to seed the batch cost model.
      for (int n = 1; n <= rows && local.ok(); n *= 2) {
        const int64_t us = forward(n);
        if (local.ok()) servable.costs().ObserveBatch(n, us);
      }
    } else {
      forward(1);  // a new OpenMP team's first forward
      for (int i = 0; i < 3 && local.ok(); ++i) {
        const int64_t us = forward(1);
        if (best < 0 || us < best) best = us;
      }
      // The wide executor runs batches too when requests coincide.
      for (int n = 2; n <= rows && local.ok(); n = every ? n + 1 : 2 * n) forward(n);
    }
    std::lock_guard<std::mutex> lock(mu);
    if (alone && local.ok()) (threads > 1 ? lone.all_threads_us : lone.single_thread_us) = best;
    if (status.ok() && !local.ok()) {
      status = absl::InternalError(
          absl::StrCat("warm-up of ", servable.name(), " failed: ", local.message()));
    }
  });
  // All threads only where they measured at least 10% faster: a 2-thread
  // forward can be slower than one thread (seen on a 2-core EPYC VM).
  lone.use_all_threads =
      lone.all_threads_us > 0 && lone.all_threads_us * 10 < lone.single_thread_us * 9;
  servable.set_lone_batch_cost(lone);
  return status;
}

absl::Status InferenceCore::Warmup() {
  for (const auto& s : registry_->List()) {
    if (auto st = Warm(*s); !st.ok()) return st;
  }
  ready_ = true;
  return absl::OkStatus();
}

void InferenceCore::Infer(InferRequest request, InferDone done) {
  last_arrival_us_.store(clock_->NowMicros(), std::memory_order_relaxed);
  if (!accepting_) {
    if (metrics_ != nullptr) metrics_->CountRefusal(request.model, "draining");
    return done(Draining());
  }
  auto use = registry_->Acquire(request.model, request.version);
  if (!use.ok()) return done(use.status());
  if (auto s = ValidateRequest(request, *use->get(), options_); !s.ok()) return done(s);
  const int n = static_cast<int>(request.images());
  // Before any work: a refused request is never decoded.
  if (auto s = CheckDeadline(request, *use->get(), options_, clock_->NowMicros()); !s.ok()) {
    if (metrics_ != nullptr) metrics_->CountRefusal(request.model, "deadline");
    return done(s);
  }
  auto ticket = admission_.Admit(*use->get(), n, InputBytes(request));
  if (!ticket.ok()) return done(ticket.status());
  inflight_.Begin();
  auto call = std::make_shared<CallState>(std::move(*use), std::move(*ticket), std::move(done),
                                          std::move(request.is_cancelled), n, request.top_k,
                                          request.priority, clock_->NowMicros(),
                                          request.deadline_us, clock_, &inflight_);
  // Re-checked after counting: a drain that began since the check at the top
  // either sees this request in WaitIdle or is seen here.
  if (!accepting_) {
    for (int i = 0; i < n; ++i) call->ImageFailed(Draining());
    return;
  }
  for (int i = 0; i < n; ++i) {
    if (request.tensor.data != nullptr) {
      SubmitTensor(call, i, request.tensor.data);
    } else {
      StartPreprocessing(call, i, request.encoded[static_cast<size_t>(i)]);
    }
  }
}

void InferenceCore::StartPreprocessing(const std::shared_ptr<CallState>& call, int index,
                                       std::string_view encoded) {
  Servable& s = call->servable();
  s.BeginPreprocessing();
  if (!preprocess_pool_->TrySchedule(
          [this, call, index, encoded] { Preprocess(call, index, encoded); })) {
    s.EndPreprocessing();
    if (metrics_ != nullptr) metrics_->CountRefusal(s.name(), "preprocess_queue");
    call->ImageFailed(absl::UnavailableError("preprocessing queue is full; retry later"));
  }
}

void InferenceCore::Preprocess(std::shared_ptr<CallState> call, int index,
                               std::string_view encoded) {
  Servable& s = call->servable();
  // Each early exit leaves the "more coming" count, so the batcher never
  // waits for an image that is not coming. Deadline before
  // cancellation: gRPC cancels expired calls too, and those should be
  // reported as DEADLINE_EXCEEDED.
  if (call->Expired(clock_->NowMicros())) {
    s.EndPreprocessing();
    call->ImageFailed(absl::DeadlineExceededError("deadline passed before preprocessing"));
    return;
  }
  if (call->Cancelled()) {
    s.EndPreprocessing();
    call->ImageFailed(absl::CancelledError("request cancelled"));
    return;
  }
  const int64_t t0 = clock_->NowMicros();
  const int64_t wait_us = t0 - call->start_us();
  if (s.metrics() != nullptr) {
    s.metrics()->preprocess_wait_seconds->Observe(wait_us * 1e-6);
    s.metrics()->decodes->Increment();
  }
  SlabRow row = s.ReserveRow();
  const absl::Status st = s.Preprocess(encoded, row.data());
  const int64_t t1 = clock_->NowMicros();
  if (st.ok()) {
    s.costs().ObservePreprocess(CostModel::FormatOf(encoded), static_cast<int64_t>(encoded.size()),
                                t1 - t0);
  }
  if (s.metrics() != nullptr) s.metrics()->preprocess_seconds->Observe((t1 - t0) * 1e-6);
  if (!st.ok()) {
    s.EndPreprocessing();
    call->ImageFailed(st);
    return;
  }
  // Counted as coming until it is queued, so a batch never leaves without
  // it in the moment between; `call` keeps the servable alive until then.
  Submit(call, index, std::move(row), wait_us, t1 - t0, t1);
  s.EndPreprocessing();
}

void InferenceCore::SubmitTensor(const std::shared_ptr<CallState>& call, int index,
                                 const void* images) {
  // [C, H, W] as sent -> a channels-last slab row, the one copy this input
  // gets.
  Servable& s = call->servable();
  SlabRow row = s.ReserveRow();
  const std::vector<int64_t> shape = s.input_shape();
  const int64_t floats = s.image_floats();
  CopyChwToHwc(static_cast<const char*>(images) + index * floats * sizeof(float), shape[0],
               shape[1] * shape[2], row.data());
  Submit(call, index, std::move(row), 0, 0, call->start_us());
}

void InferenceCore::Submit(const std::shared_ptr<CallState>& call, int index, SlabRow row,
                           int64_t preprocess_wait_us, int64_t preprocess_us, int64_t ready_us) {
  // The caller's reference to `call` keeps the servable alive through this
  // function, also after the task is queued and perhaps already answered.
  Servable& s = call->servable();
  auto task = std::make_unique<ImageTask>();
  task->deadline_us = call->deadline_us();
  task->priority = call->priority();
  task->call = call;
  task->index = index;
  task->row = std::move(row);
  task->preprocess_wait_us = preprocess_wait_us;
  task->preprocess_us = preprocess_us;
  task->ready_us = ready_us;
  const absl::Status st = s.batcher().Submit(&task);
  if (s.metrics() != nullptr) s.metrics()->queue_depth->Set(s.batcher().QueueDepth());
  if (!st.ok()) task->Fail(st);
}

}  // namespace ghostserve::core
