// Model config files: how a custom GhostNet is declared to the server
// (--model-config) and what ghostserve-train writes next to the weights.
//
//   {
//     "name": "ghostnet_050_fashion",
//     "architecture": "ghostnet",
//     "width": 0.5,
//     "num_classes": 10,
//     "input_channels": 1,
//     "input_size": 32,
//     "weights": "ghostnet_050_fashion.safetensors",
//     "labels": ["T-shirt/top", "Trouser", ...],
//     "preprocess": {"resize_shorter": 0, "crop_size": 32, "interpolation": "bilinear",
//                    "mean": [0.286], "std": [0.353]},
//     "training": {...}
//   }
//
// "weights" is relative to the config file's directory (or absolute); without
// it the model is served untrained. "calibration" names the int8 activation
// ranges measured on those weights (model/calibration.h; made with
// `ghostserve-train calibrate`), resolved as "weights"; it is read only when
// the model runs in int8 ("precision": "int8" or --precision NAME=int8),
// which fails to load without it. "labels" may also be "imagenet": the
// 1000 ImageNet class names built into the server. "version_policy" (Triton's
// form: {"latest": {"num_versions": 1}}, {"all": {}} or
// {"specific": {"versions": [1, 3]}}) matters only in a model repository
// (core/model_repository.h), where "weights" and "calibration" are relative
// to the version directory. "training" and "description" are kept as
// documentation and ignored; any other unknown key is an error, so typos do
// not pass silently.
#ifndef GHOSTSERVE_SERVER_CONFIG_MODEL_CONFIG_H_
#define GHOSTSERVE_SERVER_CONFIG_MODEL_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/ghostnet.h"
#include "model/loaded_model.h"
#include "server/preprocess/image.h"

namespace ghostserve::config {

struct VersionPolicyConfig {
  std::string kind = "latest";  // latest | all | specific
  int num_versions = 1;
  std::vector<int64_t> versions;
};

struct ModelConfig {
  std::string name;
  model::GhostNetOptions net;
  // Resolved path of the weights file; empty when weights_bytes is used or
  // the model is served untrained.
  std::string weights_path;
  // Weights compiled into the binary (built-in models only).
  std::string_view weights_bytes;
  std::string weights_name;
  // Resolved path of the int8 calibration file; empty when none is named or
  // calibration_bytes is used.
  std::string calibration_path;
  // A calibration compiled into the binary (built-in models only).
  std::string_view calibration_bytes;
  std::vector<std::string> labels;  // one per class
  bool imagenet_labels = false;     // "labels": "imagenet"
  VersionPolicyConfig version_policy;
  preprocess::PreprocessConfig preprocess;
  // "fp32" | "bf16" | "int8" | "auto" (checked when parsed; "auto" is
  // resolved for this CPU when the model loads, and never picks int8).
  std::string precision = "fp32";
  std::string description;
  // The "training" object as JSON text (provenance; not interpreted).
  std::string training_json;
};

// How LoadModel builds this model (weights and calibration from their files
// or the compiled-in bytes; the seed and other inference options stay at
// their defaults). The result borrows weights_bytes and calibration_bytes.
model::LoadModelOptions LoadOptions(const ModelConfig& config);

// Parses one config. `base_dir` resolves a relative "weights" or
// "calibration"; `source` names the config in errors. InvalidArgument naming
// the key on any error.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json, const std::string& base_dir,
                                             const std::string& source);

// Reads a config file, or every *.json file of a directory (sorted by name).
absl::StatusOr<std::vector<ModelConfig>> ReadModelConfigs(const std::string& path);

// The config as JSON (weights given as `weights_file` and the calibration as
// `calibration_file`, each relative to where the config is written; empty
// leaves the key out).
std::string ModelConfigToJson(const ModelConfig& config, const std::string& weights_file,
                              const std::string& calibration_file = "");

// Models compiled into the binary from models/*.json, their weights and, when
// the config names one, their calibration: ghostnet_050_fashion.
const std::vector<ModelConfig>& BuiltinModelConfigs();

}  // namespace ghostserve::config

#endif  // GHOSTSERVE_SERVER_CONFIG_MODEL_CONFIG_H_
