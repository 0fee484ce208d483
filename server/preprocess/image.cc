#include <algorithm>
#include <cmath>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "server/preprocess/image_decode.h"

namespace ghostserve::preprocess {
namespace {

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t BigEndian16(const unsigned char* p) { return (uint32_t{p[0]} << 8) | p[1]; }

absl::StatusOr<ImageHeader> ReadPngHeader(const unsigned char* p, size_t n) {
  // Signature (8), then the IHDR chunk: length (4) "IHDR" width (4) height (4).
  if (n < 24 || std::string_view(reinterpret_cast<const char*>(p + 12), 4) != "IHDR") {
    return absl::InvalidArgumentError("PNG image has no IHDR header (truncated or corrupt)");
  }
  return ImageHeader{ImageFormat::kPng, BigEndian32(p + 16), BigEndian32(p + 20)};
}

absl::StatusOr<ImageHeader> ReadJpegHeader(const unsigned char* p, size_t n) {
  size_t i = 2;  // after SOI
  while (i + 4 <= n) {
    if (p[i] != 0xFF) {
      return absl::InvalidArgumentError("JPEG image has a corrupt marker segment");
    }
    const unsigned char marker = p[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    // "FF 00" is a stuffed zero, not a marker: libjpeg skips it as garbage and
    // scans on for the next marker. Reading a length after it would let a
    // decoy frame header hidden in a segment libjpeg skips pass the size
    // limits while libjpeg decodes a different, huge frame.
    if (marker == 0x00) {
      return absl::InvalidArgumentError("JPEG image has a stuffed byte outside scan data");
    }
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) {
      i += 2;  // markers without a length
      continue;
    }
    const size_t len = BigEndian16(p + i + 2);
    if (len < 2) return absl::InvalidArgumentError("JPEG image has a corrupt segment length");
    const bool sof =
        marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 9 > n) break;
      return ImageHeader{ImageFormat::kJpeg, BigEndian16(p + i + 7), BigEndian16(p + i + 5)};
    }
    if (marker == 0xDA || marker == 0xD9) break;  // scan data before any frame header
    i += 2 + len;
  }
  return absl::InvalidArgumentError("JPEG image has no frame header (truncated or corrupt)");
}

// torchvision's CenterCrop offset int(round(d / 2.0)): Python rounds halves
// to even, so d = 1 gives 0 and d = 5 gives 2 (std::lround would give 1, 3).
int CenterCropOffset(int d) {
  const int half = d / 2;
  return (d % 2 == 1 && half % 2 == 1) ? half + 1 : half;
}

}  // namespace

int JpegDecodeReduction(const ImageHeader& header, const PreprocessConfig& config) {
  if (header.format != ImageFormat::kJpeg || config.resize_shorter == 0 ||
      !config.reduced_jpeg_decode) {
    return 1;
  }
  const int64_t shorter = std::min(header.width, header.height);
  // libjpeg's DCT scaling averages 2x2, 4x4 or 8x8 pixel blocks while
  // decoding: a box filter. Use it only while the decoded image keeps at least
  // twice the resize target, so the bilinear resize that follows still
  // downsamples; then the result differs from a full-size decode by no more
  // than the aliasing that bilinear downsampling by 2x or more has anyway.
  for (int r : {8, 4, 2}) {
    if (shorter / r >= 2 * config.resize_shorter) return r;
  }
  return 1;
}

absl::Status PreprocessConfig::Validate() const {
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("channels must be 1 or 3, got ", channels));
  }
  if (crop_size < 16 || crop_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("crop size must be in [16, 1024], got ", crop_size));
  }
  if (resize_shorter != 0 && (resize_shorter < crop_size || resize_shorter > 4096)) {
    return absl::InvalidArgumentError(
        absl::StrCat("resize (", resize_shorter, ") must be 0 or in [crop size, 4096]"));
  }
  if (mean.size() != static_cast<size_t>(channels) || std.size() != static_cast<size_t>(channels)) {
    return absl::InvalidArgumentError("mean and std need one value per channel");
  }
  for (float s : std) {
    if (!(s > 0.0f)) return absl::InvalidArgumentError("std values must be > 0");
  }
  return absl::OkStatus();
}

PreprocessConfig PreprocessConfig::ImageNet() { return PreprocessConfig{}; }

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  if (n == 0) return absl::InvalidArgumentError("image is empty");
  if (n >= 8 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return ReadPngHeader(p, n);
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return ReadJpegHeader(p, n);
  return absl::InvalidArgumentError("image is neither JPEG nor PNG (unrecognised magic bytes)");
}

absl::Status PreprocessDecoded(const cv::Mat& img, const PreprocessConfig& config, float* dst) {
  if (auto s = config.Validate(); !s.ok()) return s;
  if (img.empty() || img.depth() != CV_8U || img.channels() != config.channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("decoded image must be 8-bit with ", config.channels, " channel(s)"));
  }
  try {
    // Resizing the shorter side of a 1 x 16384 image to 256 would make a
    // 256 x 4194304 image (3 GB) to keep a 224 x 224 crop of it. The scale is
    // set by the shorter side, so cutting the longer side to the centred
    // kMaxResizeAspect:1 part first keeps every pixel the crop uses (up to a
    // sub-pixel shift from rounding) and bounds the resize. Images up to that
    // aspect ratio are untouched.
    cv::Mat src = img;
    if (config.resize_shorter != 0) {
      if (img.rows > static_cast<int64_t>(img.cols) * kMaxResizeAspect) {
        const int keep = img.cols * kMaxResizeAspect;
        src = img(cv::Rect(0, (img.rows - keep) / 2, img.cols, keep));
      } else if (img.cols > static_cast<int64_t>(img.rows) * kMaxResizeAspect) {
        const int keep = img.rows * kMaxResizeAspect;
        src = img(cv::Rect((img.cols - keep) / 2, 0, keep, img.rows));
      }
    }
    const int w = src.cols, h = src.rows;
    const int crop = static_cast<int>(config.crop_size);
    int rw, rh;
    if (config.resize_shorter == 0) {
      rw = rh = crop;
    } else if (w <= h) {  // torchvision Resize(int): shorter side = size, longer truncated
      rw = static_cast<int>(config.resize_shorter);
      rh = static_cast<int>(config.resize_shorter * static_cast<int64_t>(h) / w);
    } else {
      rh = static_cast<int>(config.resize_shorter);
      rw = static_cast<int>(config.resize_shorter * static_cast<int64_t>(w) / h);
    }
    rw = std::max(rw, crop);
    rh = std::max(rh, crop);
    cv::Mat resized;
    if (rw == w && rh == h) {
      resized = src;
    } else {
      cv::resize(src, resized, cv::Size(rw, rh), 0, 0,
                 config.interpolation == Interpolation::kArea ? cv::INTER_AREA : cv::INTER_LINEAR);
    }
    const int top = CenterCropOffset(rh - crop);
    const int left = CenterCropOffset(rw - crop);
    const int c = static_cast<int>(config.channels);
    float scale[3], bias[3];
    for (int k = 0; k < c; ++k) {
      scale[k] = 1.0f / (255.0f * config.std[k]);
      bias[k] = -config.mean[k] / config.std[k];
    }
    for (int y = 0; y < crop; ++y) {
      const unsigned char* row = resized.ptr<unsigned char>(top + y) + left * c;
      float* out = dst + static_cast<size_t>(y) * crop * c;
      if (c == 3) {
        for (int x = 0; x < crop; ++x) {
          // OpenCV decodes to BGR; the model wants RGB.
          out[3 * x + 0] = row[3 * x + 2] * scale[0] + bias[0];
          out[3 * x + 1] = row[3 * x + 1] * scale[1] + bias[1];
          out[3 * x + 2] = row[3 * x + 0] * scale[2] + bias[2];
        }
      } else {
        for (int x = 0; x < crop; ++x) out[x] = row[x] * scale[0] + bias[0];
      }
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image could not be preprocessed: ", e.what()));
  }
}

absl::Status PreprocessInto(std::string_view bytes, const PreprocessConfig& config,
                            const ImageLimits& limits, float* dst) {
  // The normalisation below indexes mean/std by channel and sizes rows by
  // crop_size; an unchecked config would read or write out of bounds.
  if (auto s = config.Validate(); !s.ok()) return s;
  if (bytes.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("image is ", bytes.size(), " bytes; the limit is ", limits.max_bytes));
  }
  auto header = ReadImageHeader(bytes);
  if (!header.ok()) return header.status();
  if (header->width < 1 || header->height < 1) {
    return absl::InvalidArgumentError("image header declares a zero size");
  }
  if (header->width > limits.max_side || header->height > limits.max_side ||
      header->width * header->height > limits.max_pixels) {
    return absl::InvalidArgumentError(
        absl::StrCat("image declares ", header->width, "x", header->height, "; limits are ",
                     limits.max_side, " pixels per side and ", limits.max_pixels, " pixels"));
  }
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    // IMREAD_COLOR / GRAYSCALE give 8-bit output for 16-bit PNGs, expand
    // palettes, drop alpha, and apply EXIF orientation.
    const int reduce = JpegDecodeReduction(*header, config);
    int flags = config.channels == 3 ? cv::IMREAD_COLOR : cv::IMREAD_GRAYSCALE;
    if (reduce == 2)
      flags = config.channels == 3 ? cv::IMREAD_REDUCED_COLOR_2 : cv::IMREAD_REDUCED_GRAYSCALE_2;
    if (reduce == 4)
      flags = config.channels == 3 ? cv::IMREAD_REDUCED_COLOR_4 : cv::IMREAD_REDUCED_GRAYSCALE_4;
    if (reduce == 8)
      flags = config.channels == 3 ? cv::IMREAD_REDUCED_COLOR_8 : cv::IMREAD_REDUCED_GRAYSCALE_8;
    cv::Mat img = cv::imdecode(raw, flags);
    if (img.empty()) {
      return absl::InvalidArgumentError("image could not be decoded (truncated or corrupt)");
    }
    return PreprocessDecoded(img, config, dst);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image could not be decoded: ", e.what()));
  }
}

}  // namespace ghostserve::preprocess
