// The GhostNet model format of a model repository (core/model_repository.h):
// DIR/<model>/config.json is a model config (model_config.h) whose "name",
// if given, must be the directory's; DIR/<model>/<version>/ holds the
// weights: the file the config's "weights" names (relative to the version
// directory), or else its one *.safetensors or *.pth file. An int8 model's
// calibration is the file the config's "calibration" names, also relative
// to the version directory (a calibration belongs to one version's weights).
#ifndef GHOSTSERVE_SERVER_CONFIG_REPOSITORY_LOADER_H_
#define GHOSTSERVE_SERVER_CONFIG_REPOSITORY_LOADER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/config/model_config.h"
#include "server/core/model_repository.h"

namespace ghostserve::config {

// Reads and parses `model_dir`/config.json of `model`, with "weights" and
// "calibration" resolved against `base_dir`.
absl::StatusOr<ModelConfig> ReadRepositoryConfig(const std::string& model,
                                                 const std::string& model_dir,
                                                 const std::string& base_dir);

// Loads versions as LibTorch GhostNets (core::TorchModel). A version
// directory without weights is an error, never an untrained model.
core::RepositoryLoader GhostNetRepositoryLoader();

}  // namespace ghostserve::config

#endif  // GHOSTSERVE_SERVER_CONFIG_REPOSITORY_LOADER_H_
