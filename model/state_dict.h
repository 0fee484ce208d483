// Reading and writing GhostNet weights as named tensors, and loading them
// into a module.
//
// Two file formats are read, told apart by their first bytes:
//  - the published checkpoint format: a torch.save zip archive whose
//    data.pkl holds a (collections.OrderedDict) state dict of tensors stored
//    in data/N records, parsed by the restricted pickle reader in
//    model/pickle_reader.h (LibTorch's own unpickler turns an OrderedDict
//    into None);
//  - safetensors (the format timm's GhostNet weights use), parsed by
//    model/safetensors.h.
// Both readers are Torch-free and bound every size by the file's own length
// before allocating; this file turns what they describe into tensors.
#ifndef GHOSTSERVE_MODEL_STATE_DICT_H_
#define GHOSTSERVE_MODEL_STATE_DICT_H_

#include <torch/torch.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ghostserve::model {

// Tensors in file order. Values are contiguous CPU tensors that own memory.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

// Reads a torch.save zip archive. A top-level dict holding a dict under
// "state_dict" or "model" (training checkpoints) is unwrapped, and a
// "module." prefix on every key (DataParallel) is stripped.
absl::StatusOr<StateDict> ReadTorchCheckpoint(const std::string& path);

// Reads a .safetensors file.
absl::StatusOr<StateDict> ReadSafetensors(const std::string& path);

// Parses safetensors held in memory (weights compiled into the binary);
// `name` identifies them in errors.
absl::StatusOr<StateDict> ParseSafetensorsBytes(std::string_view bytes, const std::string& name);

// Writes float/int tensors as .safetensors, with optional string metadata.
absl::Status WriteSafetensors(
    const std::string& path, const StateDict& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata = {});

// Picks the reader by the file's magic bytes ("PK" = zip archive, otherwise
// a little-endian header length followed by '{' = safetensors).
absl::StatusOr<StateDict> ReadWeightsFile(const std::string& path);

// Copies `state` into `module`'s parameters and buffers. Every name the
// module has must be present with the same shape, and the file must hold no
// other names; otherwise InvalidArgument naming the first offending key and
// the module is left untouched. Floating tensors of any precision are cast.
absl::Status LoadStateDict(torch::nn::Module& module, const StateDict& state);

// The module's parameters and buffers as a StateDict, in module order.
StateDict ModuleStateDict(const torch::nn::Module& module);

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_STATE_DICT_H_
