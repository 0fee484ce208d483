// Decoding and preprocessing of encoded images with OpenCV, into the float
// layout GhostNet takes: the part that needs neither Torch nor gRPC (so the
// fuzzer in tests/fuzz can build it with clang and sanitizers without
// LibTorch). image.h adds the Torch tensor entry point; include that one
// unless you must stay Torch-free.
#ifndef GHOSTSERVE_SERVER_PREPROCESS_IMAGE_DECODE_H_
#define GHOSTSERVE_SERVER_PREPROCESS_IMAGE_DECODE_H_

#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ghostserve::preprocess {

enum class Interpolation { kBilinear, kArea };

// Per-model preprocessing, like timm's per-model data config.
struct PreprocessConfig {
  // The shorter side is resized to this, keeping the aspect ratio; then the
  // centre crop_size x crop_size is taken. 0 resizes straight to
  // crop_size x crop_size (no crop, aspect ratio not kept).
  int64_t resize_shorter = 256;
  int64_t crop_size = 224;
  // 3: decode to RGB; 1: decode to grayscale.
  int64_t channels = 3;
  // Per channel, applied to pixel / 255.
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> std = {0.229f, 0.224f, 0.225f};
  Interpolation interpolation = Interpolation::kBilinear;
  // Decode large JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) when
  // the result keeps at least twice resize_shorter; see JpegDecodeReduction.
  bool reduced_jpeg_decode = true;
  // Decode non-interlaced 8-bit RGB, RGBA and gray PNGs (photographs) with
  // libdeflate and our own row unfiltering: the same pixels as OpenCV's
  // libpng path, about twice as fast. Every other PNG, and any that is not
  // clean, still goes to OpenCV; off: OpenCV for every PNG, as before.
  bool fast_png_decode = true;

  absl::Status Validate() const;
  // timm's ImageNet defaults: resize 256 (crop_pct 0.875), crop 224, bilinear.
  static PreprocessConfig ImageNet();
};

// Refusal limits checked against the image header before any decoding.
struct ImageLimits {
  // Encoded bytes.
  size_t max_bytes = 16 << 20;
  // Declared width x height.
  int64_t max_pixels = 40'000'000;
  // Declared width or height.
  int64_t max_side = 16384;
};

enum class ImageFormat { kJpeg, kPng };

struct ImageHeader {
  ImageFormat format;
  int64_t width = 0;
  int64_t height = 0;
};

// Recognises JPEG and PNG by their magic bytes and reads the declared size
// from the header, without decoding. InvalidArgument for anything else, or
// for a header that ends early.
absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes);

// The libjpeg DCT scaling factor (1, 2, 4 or 8) used to decode a JPEG of
// this size for `config`: the largest that keeps the decoded shorter side at
// least twice resize_shorter. 1 for PNG, for resize_shorter == 0, and when
// config.reduced_jpeg_decode is off.
int JpegDecodeReduction(const ImageHeader& header, const PreprocessConfig& config);

// Checks the header against `limits` (InvalidArgument naming the limit),
// decodes (honouring EXIF orientation; large JPEGs at reduced scale, see
// JpegDecodeReduction; common PNGs by a faster path, see fast_png_decode),
// converts to RGB or gray, resizes,
// crops and normalises, writing crop_size * crop_size * channels floats to
// `dst` in HWC order: exactly one image of a channels-last [N, C, H, W]
// tensor. Never throws; OpenCV errors and a `config` that fails Validate()
// become InvalidArgument.
absl::Status PreprocessInto(std::string_view bytes, const PreprocessConfig& config,
                            const ImageLimits& limits, float* dst);

// Beyond this ratio of longer to shorter side, PreprocessDecoded first cuts
// the longer side to its centred kMaxResizeAspect:1 part (which holds the
// whole centre crop), so an extreme aspect ratio cannot make the resize
// allocate gigabytes. Only with resize_shorter != 0.
inline constexpr int kMaxResizeAspect = 16;

// The part of PreprocessInto after decoding: resizes, crops and normalises
// an 8-bit image with config.channels channels (BGR when 3, as OpenCV
// decodes) into `dst`. The trainer feeds raw dataset pixels through it, so
// training and serving see identical inputs. Never throws.
absl::Status PreprocessDecoded(const cv::Mat& img, const PreprocessConfig& config, float* dst);

}  // namespace ghostserve::preprocess

#endif  // GHOSTSERVE_SERVER_PREPROCESS_IMAGE_DECODE_H_
