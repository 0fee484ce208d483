// Torch-free descriptions of tensors as the weight-file readers find them
// (model/pickle_reader.h, model/safetensors.h). The readers parse untrusted
// files into these, so they can be fuzzed without LibTorch; model/state_dict.h
// turns them into torch::Tensor.
#ifndef GHOSTSERVE_MODEL_TENSOR_DESC_H_
#define GHOSTSERVE_MODEL_TENSOR_DESC_H_

#include <cstddef>
#include <cstdint>

namespace ghostserve::model {

// The element types both formats can hold (LibTorch's names in comments).
enum class DType {
  kF32,   // kFloat
  kF64,   // kDouble
  kF16,   // kHalf
  kBF16,  // kBFloat16
  kI64,   // kLong
  kI32,   // kInt
  kI16,   // kShort
  kI8,    // kChar
  kU8,    // kByte
  kBool,  // kBool
};

// Bytes per element.
constexpr size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
      return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      return 1;
  }
  return 1;
}

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_TENSOR_DESC_H_
