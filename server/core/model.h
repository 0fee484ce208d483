// The seam between the serving core and an inference engine. The core hands a
// model a batch of preprocessed images as plain float buffers and takes back
// logits; it never sees LibTorch. The LibTorch GhostNet implements it in
// torch_model.h; tests/fakes/fake_model.h implements it for the core's own
// tests.
#ifndef GHOSTSERVE_SERVER_CORE_MODEL_H_
#define GHOSTSERVE_SERVER_CORE_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ghostserve::core {

// What a model takes and gives, and what ListModels and KServe metadata report
// about it. Fixed for the model's lifetime.
struct ModelInfo {
  int64_t input_channels = 3;
  int64_t num_classes = 0;
  // GhostNet width multiplier (informational).
  double width = 1.0;
  int64_t parameters = 0;
  // Multiply-accumulates per image at the model's nominal input size.
  int64_t macs = 0;
  // Memory held by the compiled weights.
  int64_t weight_bytes = 0;
  // "file:<path>", "builtin:<name>" or "untrained:seed=<n>".
  std::string weights_source;
  bool trained = false;
  // KServe ModelMetadata.platform.
  std::string platform = "pytorch_libtorch";
  // The number format Forward computes in ("fp32"; reported by ListModels
  // and GET /v1/models).
  std::string precision = "fp32";
};

// Thread-safe: Forward may run on several executor threads at once.
class Model {
 public:
  virtual ~Model() = default;

  virtual const ModelInfo& info() const = 0;

  // Runs `n` >= 1 images. `images` holds them one after another, each
  // [height, width, input_channels] float32 (channels-last), 64-byte aligned.
  // Writes n * num_classes logits to `logits`. Both buffers are borrowed for
  // the call. Errors are statuses; Forward never throws.
  virtual absl::Status Forward(const float* images, int n, int64_t height, int64_t width,
                               float* logits) const = 0;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_MODEL_H_
