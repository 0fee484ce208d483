// A GhostNet ready to serve: architecture, provenance of its weights, counts,
// and the compiled inference form.
#ifndef GHOSTSERVE_MODEL_LOADED_MODEL_H_
#define GHOSTSERVE_MODEL_LOADED_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/ghostnet.h"
#include "model/inference.h"

namespace ghostserve::model {

// The ImageNet-shaped GhostNets served by default: ghostnet_050, ghostnet_100
// and ghostnet_130 (widths 0.5, 1.0, 1.3; 1000 classes; 224x224 RGB).
// NotFound for any other name.
absl::StatusOr<GhostNetOptions> BuiltinModelOptions(const std::string& name);
std::vector<std::string> BuiltinModelNames();

struct LoadedModel {
  std::string name;
  GhostNetOptions options;
  // "file:<path>" when weights were read from a file, "builtin:<name>" for
  // weights compiled into the binary, or
  // "untrained:seed=<n>" for deterministic initialisation.
  std::string weights_source;
  bool trained = false;
  int64_t parameters = 0;
  int64_t macs = 0;
  std::unique_ptr<InferenceGhostNet> inference;
};

struct LoadModelOptions {
  std::string name;
  GhostNetOptions net;
  // Empty: no file; the weights are initialised deterministically from seed.
  std::string weights_path;
  // Safetensors bytes compiled into the binary (used when weights_path is
  // empty and this is not); must outlive LoadModel. weights_name names them
  // in weights_source ("builtin:<weights_name>").
  std::string_view weights_bytes;
  std::string weights_name;
  uint64_t seed = 0;
  // int8 only, when inference.calibration is not set: a calibration file
  // (calibration.h), or its bytes compiled into the binary (used when the
  // path is empty; must outlive LoadModel). Ignored for other precisions.
  std::string calibration_path;
  std::string_view calibration_bytes;
  InferenceOptions inference;
};

// Builds the network, loads or initialises weights, counts parameters and
// MACs, and compiles it. Errors: InvalidArgument for bad options or a weights
// file that does not fit the architecture (naming the first bad key),
// NotFound for a missing file.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const LoadModelOptions& options);

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_LOADED_MODEL_H_
