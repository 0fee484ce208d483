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
// And differentially: each input also seeds a small, well-formed PNG (its
// bytes become the filtered scanlines, with valid zlib and CRCs, so the fast
// PNG path's unfiltering runs on arbitrary data rather than stopping at a
// CRC), which must decode to exactly the same floats, or fail the same way,
// with the fast path on and off (OpenCV's libpng).
#include <zlib.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <opencv2/core.hpp>
#include <cstring>
#include <string>
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

void PutBE32(std::string* out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(b, 4);
}

void AddChunk(std::string* png, const char* type, const std::string& data) {
  PutBE32(png, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  png->append(body);
  PutBE32(png, static_cast<uint32_t>(
                   crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

// data[0], data[1]: width and height - 1 (mod 48); data[2]: colour type
// (gray, RGB, RGBA) and whether the stream is split over two IDATs; the rest,
// repeated, the filtered scanlines (filter bytes included).
std::string SynthesizePng(const uint8_t* data, size_t size) {
  const uint32_t w = 1 + data[0] % 48, h = 1 + data[1] % 48;
  static const int kColour[3] = {0, 2, 6}, kBpp[3] = {1, 3, 4};
  const int kind = data[2] % 3;
  const size_t stride = w * static_cast<size_t>(kBpp[kind]) + 1;
  std::string raw(h * stride, '\0');
  if (size > 3) {
    for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>(data[3 + i % (size - 3)]);
  }
  uLongf zlen = compressBound(static_cast<uLong>(raw.size()));
  std::string z(zlen, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &zlen,
                reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()),
                6) != Z_OK) {
    return {};
  }
  z.resize(zlen);
  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  PutBE32(&ihdr, w);
  PutBE32(&ihdr, h);
  ihdr += std::string{8, static_cast<char>(kColour[kind]), 0, 0, 0};
  AddChunk(&png, "IHDR", ihdr);
  if ((data[2] / 3) % 2 == 1 && z.size() > 1) {
    AddChunk(&png, "IDAT", z.substr(0, z.size() / 2));
    AddChunk(&png, "IDAT", z.substr(z.size() / 2));
  } else {
    AddChunk(&png, "IDAT", z);
  }
  AddChunk(&png, "IEND", "");
  return png;
}

// The fast PNG path and OpenCV's agree exactly, in status and in output.
void Differential(std::string_view png, PreprocessConfig config, const ImageLimits& limits) {
  const size_t n = static_cast<size_t>(config.crop_size * config.crop_size * config.channels);
  std::vector<float> fast(n, 0.0f), slow(n, 0.0f);
  config.fast_png_decode = true;
  const absl::Status a = PreprocessInto(png, config, limits, fast.data());
  config.fast_png_decode = false;
  const absl::Status b = PreprocessInto(png, config, limits, slow.data());
  if (a.ok() != b.ok()) Fail("fast PNG path and OpenCV disagree on whether the PNG decodes");
  if (a.ok() && std::memcmp(fast.data(), slow.data(), n * sizeof(float)) != 0) {
    Fail("fast PNG path and OpenCV decode different pixels");
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
  if (size >= 3) {
    const std::string png = SynthesizePng(data, size);
    if (!png.empty()) {
      Check(png, imagenet, limits);
      Differential(png, imagenet, limits);
      Differential(png, gray, limits);
    }
  }
  return 0;
}
