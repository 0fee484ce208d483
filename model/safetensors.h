// The safetensors format (the format timm's GhostNet weights use): an 8-byte
// little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the tensor bytes.
//
// Torch-free: the reader validates the header into tensor descriptions
// (model/tensor_desc.h), so it can be fuzzed without LibTorch
// (tests/fuzz/safetensors_fuzzer.cc); model/state_dict.h reads the bytes into
// torch::Tensor and writes files.
//
// Hostile input: the header must fit in the file (and in 100 MB), every
// tensor's byte range must lie in the data section and match its dtype and
// shape, and no two ranges may overlap, so all tensors together never need
// more memory than the file's own size.
#ifndef GHOSTSERVE_MODEL_SAFETENSORS_H_
#define GHOSTSERVE_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tensor_desc.h"

namespace ghostserve::model {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range, relative to data_start
};

struct SafetensorsIndex {
  uint64_t data_start = 0;                // file offset of the data section
  std::vector<SafetensorsEntry> entries;  // in data order (by begin)
};

// Reads and validates the header from `in` (positioned at the file's start),
// which holds `file_size` bytes; `path` names the source in errors. Leaves
// `in` positioned after the header. Errors are InvalidArgument.
absl::StatusOr<SafetensorsIndex> ParseSafetensorsHeader(std::istream& in, uint64_t file_size,
                                                        const std::string& path);

// The dtype of a safetensors dtype code ("F32", "BF16", ...), and back.
std::optional<DType> SafetensorsDType(std::string_view code);
std::string_view SafetensorsDTypeCode(DType dtype);

// A read-only istream buffer over memory the caller keeps alive.
class MemoryStreamBuf : public std::streambuf {
 public:
  explicit MemoryStreamBuf(std::string_view bytes);

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override;
  pos_type seekpos(pos_type pos, std::ios_base::openmode mode) override;
};

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_SAFETENSORS_H_
