// The LibTorch GhostNet behind the core's Model seam, and the server's way to
// build a core from model specs. The only part of server/core/ that links
// LibTorch (library ghostserve_core_torch).
#ifndef GHOSTSERVE_SERVER_CORE_TORCH_MODEL_H_
#define GHOSTSERVE_SERVER_CORE_TORCH_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/loaded_model.h"
#include "server/core/inference_core.h"
#include "server/core/model.h"

namespace ghostserve::core {

// Wraps a loaded GhostNet. Thread-safe like InferenceGhostNet::Forward.
class TorchModel : public Model {
 public:
  explicit TorchModel(std::unique_ptr<model::LoadedModel> loaded);
  const ModelInfo& info() const override { return info_; }
  // The batch buffer becomes a channels-last tensor without a copy.
  absl::Status Forward(const float* images, int n, int64_t height, int64_t width,
                       float* logits) const override;
  const model::LoadedModel& loaded() const { return *loaded_; }

 private:
  std::unique_ptr<model::LoadedModel> loaded_;
  ModelInfo info_;
};

// How to build one served model.
struct ModelSpec {
  std::string name;
  model::LoadModelOptions load;
  preprocess::PreprocessConfig preprocess;
  // One per class; empty means "class_<index>".
  std::vector<std::string> labels;
};

// Loads every model and serves it from a new core whose executor threads are
// set up for LibTorch (OpenMP threads per the options' thread plan).
absl::StatusOr<std::unique_ptr<InferenceCore>> CreateInferenceCore(const CoreOptions& options,
                                                                   std::vector<ModelSpec> models,
                                                                   batcher::Clock* clock,
                                                                   metrics::ServerMetrics* metrics);

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_TORCH_MODEL_H_
