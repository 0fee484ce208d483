// The number format a model computes in, and what this CPU runs natively.
#ifndef GHOSTSERVE_MODEL_PRECISION_H_
#define GHOSTSERVE_MODEL_PRECISION_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ghostserve::model {

enum class Precision {
  kFp32,  // float32 throughout (the default; exact parity with PyTorch)
  kBf16,  // bfloat16 weights and activations, float32 accumulation and logits
  kInt8,  // static post-training quantization: int8 weights (one scale per
          // output channel) and activations (one scale per map, from a
          // calibration), int32 accumulation, float32 logits
};

// "fp32" | "bf16" | "int8".
std::string_view PrecisionName(Precision p);

// Parses "fp32", "bf16", "int8" or "auto" (bf16 where the CPU has native
// bf16 instructions, fp32 elsewhere; never int8, which needs a calibration).
// InvalidArgument for anything else.
absl::StatusOr<Precision> ParsePrecision(std::string_view name);

// OK when this CPU runs `p` natively, as oneDNN sees it (so
// ONEDNN_MAX_CPU_ISA=AVX2 makes an AVX-512 machine refuse bf16). bf16 needs
// AVX512-BF16 or AMX-BF16, int8 AVX2 or newer; the error names the missing feature and the ISA
// oneDNN found. A precision the CPU would only emulate is refused rather than
// served slowly.
absl::Status CheckPrecisionSupported(Precision p);

// oneDNN's name for the instruction set it uses on this CPU, e.g.
// "avx512_core_bf16" or "avx2".
std::string CpuIsaName();

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_PRECISION_H_
