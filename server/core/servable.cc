#include "server/core/servable.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ghostserve::core {

absl::StatusOr<std::unique_ptr<Servable>> Servable::Create(
    ServableSpec spec, std::unique_ptr<Model> model, const batcher::BatcherOptions& batching,
    batcher::Clock* clock, metrics::ModelMetrics* metrics, DispatchFn dispatch) {
  if (model == nullptr) return absl::InvalidArgumentError("servable needs a model");
  const std::string& name = spec.name;
  if (auto s = spec.preprocess.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name, ": ", s.message()));
  }
  const ModelInfo& info = model->info();
  if (spec.preprocess.channels != info.input_channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, ": preprocessing gives ", spec.preprocess.channels,
                     " channels, the network takes ", info.input_channels));
  }
  if (!spec.labels.empty() && static_cast<int64_t>(spec.labels.size()) != info.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name, ": ", spec.labels.size(),
                                                   " labels for ", info.num_classes, " classes"));
  }
  std::unique_ptr<Servable> s(new Servable());
  s->spec_ = std::move(spec);
  s->model_ = std::move(model);
  s->metrics_ = metrics;
  // Summed over the model's versions served; the destructor takes it back.
  if (metrics != nullptr) metrics->weight_bytes->Increment(static_cast<double>(info.weight_bytes));
  batcher::BatcherOptions bo = batching;
  bo.name = s->name();
  if (auto st = bo.Validate(); !st.ok()) return st;
  // Admission bounds the images from arrival, so the batch queue itself
  // never refuses an admitted image.
  s->image_budget_ = bo.max_queue_size + bo.max_batch_size * bo.num_workers;
  bo.max_queue_size = s->image_budget_;
  s->costs_ = std::make_unique<CostModel>(bo.max_batch_size);
  s->slabs_ = std::make_unique<SlabAllocator>(bo.max_batch_size, s->image_floats());
  Servable* raw = s.get();
  bo.predict_batch_us = [raw](int n) { return raw->costs().BatchUs(n); };
  auto batcher = batcher::Batcher<ImageTask>::Create(
      bo, clock,
      [raw, dispatch = std::move(dispatch)](std::vector<std::unique_ptr<ImageTask>> tasks) {
        dispatch(raw, std::move(tasks));
      },
      nullptr, [raw] { return raw->preprocessing_.load() > 0; });
  if (!batcher.ok()) return batcher.status();
  s->batcher_ = std::move(*batcher);
  return s;
}

Servable::~Servable() {
  if (metrics_ != nullptr) {
    metrics_->weight_bytes->Decrement(static_cast<double>(model_->info().weight_bytes));
  }
}

std::vector<int64_t> Servable::input_shape() const {
  return {spec_.preprocess.channels, spec_.preprocess.crop_size, spec_.preprocess.crop_size};
}

int64_t Servable::image_floats() const {
  return int64_t{spec_.preprocess.channels} * spec_.preprocess.crop_size *
         spec_.preprocess.crop_size;
}

void Servable::EndPreprocessing() {
  if (preprocessing_.fetch_sub(1) == 1) batcher_->Poke();
}

bool Servable::TryAdmit(int images) {
  int admitted = admitted_.load();
  do {
    if (admitted + images > image_budget_) return false;
  } while (!admitted_.compare_exchange_weak(admitted, admitted + images));
  if (metrics_ != nullptr) metrics_->admitted_images->Increment(images);
  return true;
}

void Servable::Unadmit(int images) {
  admitted_.fetch_sub(images);
  if (metrics_ != nullptr) metrics_->admitted_images->Decrement(images);
}

void Servable::AddUse() {
  std::lock_guard<std::mutex> lock(use_mu_);
  ++uses_;
}

void Servable::ReleaseUse() {
  // Notified under the lock: once it is released, a waiter in WaitUnused may
  // destroy the servable, so nothing here touches it afterwards.
  std::lock_guard<std::mutex> lock(use_mu_);
  if (--uses_ == 0) unused_cv_.notify_all();
}

void Servable::WaitUnused() {
  std::unique_lock<std::mutex> lock(use_mu_);
  unused_cv_.wait(lock, [this] { return uses_ == 0; });
}

ServableUse& ServableUse::operator=(ServableUse&& o) noexcept {
  if (this != &o) {
    if (s_ != nullptr) s_->ReleaseUse();
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}

}  // namespace ghostserve::core
