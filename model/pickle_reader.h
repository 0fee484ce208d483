// A restricted pickle reader for the state dicts torch.save writes.
//
// Why it exists: a torch.save zip archive's data.pkl holds the state dict as
// a pickled collections.OrderedDict, and LibTorch 1.13's own unpickler turns
// an OrderedDict into None. This reader understands just the opcodes and
// globals torch.save emits for state dicts (dicts, tuples, lists, scalars,
// strings, storages and _rebuild_tensor / _rebuild_parameter) and refuses
// everything else; no callable named in the file is ever invoked.
//
// It is Torch-free: it parses into tensor descriptions (model/tensor_desc.h)
// that model/state_dict.cc turns into torch::Tensor, so it can be fuzzed
// without LibTorch (tests/fuzz/pickle_fuzzer.cc). The zip archive itself is
// read by the caller (LibTorch's PyTorchStreamReader), which hands storage
// records over through a RecordLoader.
//
// Hostile input: every size is bounded by the bytes actually present. A
// tensor view must lie inside its storage and hold no more elements than it,
// and all views together may describe at most twice the storage bytes loaded
// (plus 1 MiB), so a small file can never ask for a large allocation.
#ifndef GHOSTSERVE_MODEL_PICKLE_READER_H_
#define GHOSTSERVE_MODEL_PICKLE_READER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tensor_desc.h"

namespace ghostserve::model {

// Bytes of one archive record; `data` keeps them alive.
struct RecordBytes {
  std::shared_ptr<const uint8_t> data;
  size_t size = 0;
};

// Returns the bytes of the archive record `name` (e.g. "data/0"), or nullopt
// when the archive has no such record. May throw; exceptions pass through.
using RecordLoader = std::function<std::optional<RecordBytes>(const std::string& name)>;

// A strided view of one storage: element (i0, i1, ...) is at element index
// offset + sum(ik * strides[k]) of `storage`. Every index the view touches
// lies inside the storage (checked by the reader); a view with a zero in its
// shape touches none.
struct PickledTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
  RecordBytes storage;  // storage.size is a multiple of DTypeSize(dtype)
};

// A state dict in file order. Several names may share one tensor.
struct PickledStateDict {
  std::vector<PickledTensor> tensors;
  std::vector<std::pair<std::string, size_t>> entries;  // name -> index in tensors
};

// Unpickles `pkl` (the archive's data.pkl). A top-level dict holding a dict
// under "state_dict", "model" or "model_state_dict" (training checkpoints) is
// unwrapped, and a "module." prefix on every key (DataParallel) is stripped.
// Errors are InvalidArgument; messages do not name the file.
absl::StatusOr<PickledStateDict> ReadPickledStateDict(std::string_view pkl,
                                                      const RecordLoader& load);

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_PICKLE_READER_H_
