// libFuzzer target for the bytes -> tensor path a client controls: header
// parsing (ReadImageHeader, JpegDecodeReduction) and PreprocessInto with the
// ImageNet config and a small grayscale config. Built by tests/fuzz/
// CMakeLists.txt with clang and -fsanitize=fuzzer,address,undefined; run it
// with `make fuzz`.
//
// The limits are small so that every accepted input decodes in milliseconds
// and needs a few MB; an allocation over libFuzzer's -malloc_limit_mb then
// means the preprocessing allocated far more than the declared image needs
// (a finding, not noise). Besides the sanitizers, each run checks:
//   - only OK or InvalidArgument come back,
//   - OK implies the header parses and is within the limits,
//   - every output value is finite and inside the normalised pixel range.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <opencv2/core.hpp>
#include <string_view>
#include <vector>

#include "server/preprocess/image_decode.h"
#include "tests/fuzz/fuzz_configs.h"

namespace {

using ghostserve::preprocess::ImageLimits;
using ghostserve::preprocess::JpegDecodeReduction;
using ghostserve::preprocess::PreprocessConfig;
using ghostserve::preprocess::PreprocessInto;
using ghostserve::preprocess::ReadImageHeader;

using ghostserve::fuzz::FuzzLimits;
using ghostserve::fuzz::GrayConfig;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "preprocess_fuzzer: %s\n", what);
  std::abort();
}

void Check(std::string_view bytes, const PreprocessConfig& config, const ImageLimits& limits) {
  const size_t n = static_cast<size_t>(config.crop_size * config.crop_size * config.channels);
  // NaN sentinel: an OK status with an unwritten value fails the range check.
  std::vector<float> out(n, std::nanf(""));
  const absl::Status s = PreprocessInto(bytes, config, limits, out.data());
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument) Fail("status other than InvalidArgument");
    return;
  }
  auto header = ReadImageHeader(bytes);
  if (!header.ok()) Fail("PreprocessInto accepted an image whose header does not parse");
  if (header->width < 1 || header->height < 1 || header->width > limits.max_side ||
      header->height > limits.max_side || header->width * header->height > limits.max_pixels) {
    Fail("PreprocessInto accepted an image whose header is outside the limits");
  }
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % config.channels);
    const float lo = (0.0f - config.mean[c]) / config.std[c] - 1e-3f;
    const float hi = (1.0f - config.mean[c]) / config.std[c] + 1e-3f;
    if (!(out[i] >= lo && out[i] <= hi)) Fail("output value not finite or out of range");
  }
}

}  // namespace

// The server decodes on its own threads with OpenCV's pool off; do the same,
// so a finding reproduces on one thread.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  cv::setNumThreads(0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ImageLimits limits = FuzzLimits();
  static const PreprocessConfig imagenet = PreprocessConfig::ImageNet();
  static const PreprocessConfig gray = GrayConfig();
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  auto header = ReadImageHeader(bytes);
  if (header.ok()) {
    const int r = JpegDecodeReduction(*header, imagenet);
    if (r != 1 && r != 2 && r != 4 && r != 8) Fail("JpegDecodeReduction out of {1,2,4,8}");
  }
  Check(bytes, imagenet, limits);
  Check(bytes, gray, limits);
  return 0;
}
