#include "model/precision.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "absl/strings/str_cat.h"

namespace ghostserve::model {

std::string_view PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kInt8:
      return "int8";
  }
  return "fp32";
}

std::string CpuIsaName() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "unknown";
  }
}

namespace {

bool HasNativeBf16() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

}  // namespace

absl::StatusOr<Precision> ParsePrecision(std::string_view name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "auto") return HasNativeBf16() ? Precision::kBf16 : Precision::kFp32;
  if (name == "int8") return Precision::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("precision must be fp32, bf16, int8 or auto, got '", std::string(name), "'"));
}

absl::Status CheckPrecisionSupported(Precision p) {
  if (p == Precision::kBf16 && !HasNativeBf16()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "precision bf16 needs a CPU with AVX512-BF16 or AMX-BF16 instructions; oneDNN found ",
        CpuIsaName(), " here (ONEDNN_MAX_CPU_ISA may cap it). Use fp32 or auto"));
  }
  // oneDNN's int8 kernels need AVX2 (vpmaddubsw) at least; AVX512-VNNI and
  // AMX run them faster still.
  if (p == Precision::kInt8) {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    if (isa == dnnl::cpu_isa::sse41 || isa == dnnl::cpu_isa::avx) {
      return absl::FailedPreconditionError(absl::StrCat(
          "precision int8 needs a CPU with AVX2 instructions or newer; oneDNN found ", CpuIsaName(),
          " here (ONEDNN_MAX_CPU_ISA may cap it). Use fp32"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ghostserve::model
