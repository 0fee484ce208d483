#include "server/core/torch_model.h"

#include <torch/torch.h>

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/threading.h"

namespace ghostserve::core {

TorchModel::TorchModel(std::unique_ptr<model::LoadedModel> loaded) : loaded_(std::move(loaded)) {
  info_.input_channels = loaded_->options.in_channels;
  info_.num_classes = loaded_->options.num_classes;
  info_.width = loaded_->options.width;
  info_.parameters = loaded_->parameters;
  info_.macs = loaded_->macs;
  info_.weight_bytes = loaded_->inference->WeightBytes();
  info_.weights_source = loaded_->weights_source;
  info_.trained = loaded_->trained;
  info_.precision = std::string(model::PrecisionName(loaded_->inference->options().precision));
}

absl::Status TorchModel::Forward(const float* images, int n, int64_t height, int64_t width,
                                 float* logits) const {
  try {
    const int64_t c = info_.input_channels;
    // Channels-last strides over the caller's buffer; Forward only reads it.
    torch::Tensor x = torch::from_blob(const_cast<float*>(images), {n, c, height, width},
                                       {height * width * c, 1, width * c, c}, torch::kFloat);
    auto out = loaded_->inference->Forward(x);
    if (!out.ok()) return out.status();
    torch::from_blob(logits, {n, info_.num_classes}, torch::kFloat).copy_(*out);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("forward failed: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<InferenceCore>> CreateInferenceCore(
    const CoreOptions& options, std::vector<ModelSpec> models, batcher::Clock* clock,
    metrics::ServerMetrics* metrics) {
  auto core = InferenceCore::Create(options, clock, metrics,
                                    [](int threads) { model::ConfigureInferenceThread(threads); });
  if (!core.ok()) return core.status();
  for (auto& spec : models) {
    if ((*core)->Find(spec.name).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model ", spec.name, " is configured twice"));
    }
    // Checked before the (slow) load; Servable::Create checks them again
    // against the loaded model.
    if (auto s = spec.preprocess.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model ", spec.name, ": ", s.message()));
    }
    spec.load.name = spec.name;
    auto loaded = model::LoadModel(spec.load);
    if (!loaded.ok()) return loaded.status();
    ServableSpec servable{spec.name, 1, spec.preprocess, std::move(spec.labels), nullptr};
    if (auto s = (*core)->AddServable(std::move(servable),
                                      std::make_unique<TorchModel>(std::move(*loaded)));
        !s.ok()) {
      return s;
    }
  }
  return core;
}

}  // namespace ghostserve::core
