#include <algorithm>
#include <cmath>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <memory>
#include <utility>
#include <vector>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <libdeflate.h>

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

// The fast PNG path: the chunk walk, libdeflate for the whole zlib stream
// at once (zlib's inflate, which libpng calls row by row, was two thirds of
// the decode time), then the row filters undone in place, so that an 8-bit
// RGB file's pixels are read straight from the inflated rows.

struct DeflateFree {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

bool ChunkCrcOk(const unsigned char* chunk, size_t len) {
  // CRC over type and data; libpng refuses a critical chunk whose CRC fails.
  return libdeflate_crc32(0, chunk + 4, len + 4) == BigEndian32(chunk + 8 + len);
}

// Undoes PNG filter `filter` on `row` (n bytes, bpp bytes per pixel) given
// the previous row already undone (zeros for the first row). Rows carry at
// least 16 bytes of slack after them, for the 4-byte loads below.
void Unfilter(int filter, unsigned char* row, const unsigned char* prev, size_t n, int bpp) {
  switch (filter) {
    case 1:  // Sub
      for (size_t i = bpp; i < n; ++i) row[i] = static_cast<unsigned char>(row[i] + row[i - bpp]);
      return;
    case 2:  // Up
      for (size_t i = 0; i < n; ++i) row[i] = static_cast<unsigned char>(row[i] + prev[i]);
      return;
    case 3:  // Average
      for (int i = 0; i < bpp; ++i) row[i] = static_cast<unsigned char>(row[i] + (prev[i] >> 1));
      for (size_t i = bpp; i < n; ++i) {
        row[i] = static_cast<unsigned char>(row[i] + ((row[i - bpp] + prev[i]) >> 1));
      }
      return;
    case 4:  // Paeth
#ifdef __SSE2__
      if (bpp == 3 || bpp == 4) {
        // One pixel per step in 16-bit lanes (as libpng's SSE2 filters):
        // a = left, b = up, c = up-left.
        const __m128i zero = _mm_setzero_si128();
        auto load = [](const unsigned char* p) {
          uint32_t v;
          std::memcpy(&v, p, 4);
          return _mm_unpacklo_epi8(_mm_cvtsi32_si128(static_cast<int>(v)), _mm_setzero_si128());
        };
        auto abs16 = [&](__m128i x) {
          const __m128i neg = _mm_cmplt_epi16(x, zero);
          return _mm_sub_epi16(_mm_xor_si128(x, neg), neg);
        };
        auto select = [](__m128i cond, __m128i t, __m128i e) {
          return _mm_or_si128(_mm_and_si128(cond, t), _mm_andnot_si128(cond, e));
        };
        __m128i a = zero, c = zero;
        for (size_t i = 0; i < n; i += bpp) {
          const __m128i b = load(prev + i);
          __m128i d = load(row + i);
          const __m128i pa0 = _mm_sub_epi16(b, c), pb0 = _mm_sub_epi16(a, c);
          const __m128i pc = abs16(_mm_add_epi16(pa0, pb0));
          const __m128i pa = abs16(pa0), pb = abs16(pb0);
          const __m128i smallest = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
          const __m128i nearest = select(_mm_cmpeq_epi16(pa, smallest), a,
                                         select(_mm_cmpeq_epi16(pb, smallest), b, c));
          d = _mm_add_epi8(d, nearest);  // the high bytes stay 0: mod 256 per lane
          const uint32_t out = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_packus_epi16(d, d)));
          std::memcpy(row + i, &out, bpp);
          a = d;
          c = b;
        }
        return;
      }
#endif
      for (size_t i = 0; i < n; ++i) {
        const int a = i >= static_cast<size_t>(bpp) ? row[i - bpp] : 0;
        const int b = prev[i];
        const int c = i >= static_cast<size_t>(bpp) ? prev[i - bpp] : 0;
        const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
        const int pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
        row[i] = static_cast<unsigned char>(row[i] + pred);
      }
      return;
    default:  // 0: None
      return;
  }
}

// A decoded image and the buffer it points into.
struct DecodedImage {
  cv::Mat storage;
  cv::Mat image;  // RGB, RGBA or gray, 8-bit; empty: not decoded here
};

// Decodes a non-interlaced 8-bit RGB, RGBA or gray PNG, the layouts of
// photographs, to the pixels libpng gives OpenCV: RGB(A) order, alpha kept
// as a fourth channel for ResizeCropNormalize to drop (OpenCV strips it; no
// compositing), no gamma, gray as one channel. Anything else, and any file
// that is not clean (a CRC, the zlib stream or its length, a filter byte, a
// missing IEND, an unknown critical chunk), returns an empty image for
// OpenCV to decode as before, so nothing decodes differently or is refused
// differently. So do files with an eXIf chunk (OpenCV applies their
// orientation), and colour files for a gray config (libpng's rgb_to_gray).
DecodedImage DecodePngFast(std::string_view bytes, int channels) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  // IHDR: length 13 at 8, fields at 16; ReadPngHeader checked the type.
  if (n < 33 || BigEndian32(p + 8) != 13 || !ChunkCrcOk(p + 8, 13)) return {};
  const uint32_t w = BigEndian32(p + 16), h = BigEndian32(p + 20);
  const int depth = p[24], colour = p[25];
  if (depth != 8 || p[26] != 0 || p[27] != 0 || p[28] != 0) return {};  // compression, filter, interlace
  int bpp;
  if (colour == 2) {
    bpp = 3;
  } else if (colour == 6) {
    bpp = 4;
  } else if (colour == 0) {
    bpp = 1;
  } else {
    return {};  // palette, gray + alpha
  }
  if (channels == 1 && bpp != 1) return {};
  if (w == 0 || h == 0) return {};

  // Walk the chunks: the IDAT run, and the end.
  std::vector<std::pair<const unsigned char*, size_t>> idat;
  bool idat_done = false, iend = false;
  size_t i = 8 + 25;
  while (n >= 12 && i <= n - 12) {
    const size_t len = BigEndian32(p + i);
    if (len > n - i - 12) return {};
    const std::string_view type(reinterpret_cast<const char*>(p + i + 4), 4);
    if (type == "IDAT") {
      if (idat_done || !ChunkCrcOk(p + i, len)) return {};
      idat.emplace_back(p + i + 8, len);
    } else {
      if (!idat.empty()) idat_done = true;
      if (type == "IEND") {
        iend = true;
        break;
      }
      if (type == "eXIf" || type == "IHDR") return {};
      // libpng converts colour to gray in linear light when these are present;
      // a gray config takes OpenCV's path for them.
      if (channels == 1 &&
          (type == "gAMA" || type == "sRGB" || type == "iCCP" || type == "cHRM")) {
        return {};
      }
      // Critical chunks (upper-case first letter) other than PLTE (a
      // suggested palette in an RGB file) are for the full decoder.
      if ((type[0] & 0x20) == 0 && type != "PLTE") return {};
    }
    i += 12 + len;
  }
  if (!iend || idat.empty()) return {};

  const size_t stride = static_cast<size_t>(w) * bpp;
  const size_t raw_size = static_cast<size_t>(h) * (stride + 1);
  // One zlib stream across the IDATs: contiguous if there is one chunk.
  std::string joined;
  const void* z = idat[0].first;
  size_t z_size = idat[0].second;
  if (idat.size() > 1) {
    z_size = 0;
    for (const auto& c : idat) z_size += c.second;
    joined.reserve(z_size);
    for (const auto& c : idat) joined.append(reinterpret_cast<const char*>(c.first), c.second);
    z = joined.data();
  }
  DecodedImage out;
  out.storage.create(1, static_cast<int>(std::min<size_t>(raw_size + 16, INT32_MAX)), CV_8UC1);
  if (out.storage.total() != raw_size + 16) return {};
  static thread_local std::unique_ptr<libdeflate_decompressor, DeflateFree> inflater(
      libdeflate_alloc_decompressor());
  if (!inflater) return {};
  size_t in_used = 0, out_size = 0;
  if (libdeflate_zlib_decompress_ex(inflater.get(), z, z_size, out.storage.data, raw_size, &in_used,
                                    &out_size) != LIBDEFLATE_SUCCESS ||
      out_size != raw_size || in_used != z_size) {
    return {};
  }
  std::vector<unsigned char> zeros(stride + 16, 0);
  const unsigned char* prev = zeros.data();
  for (uint32_t y = 0; y < h; ++y) {
    unsigned char* line = out.storage.data + y * (stride + 1);
    if (line[0] > 4) return {};
    Unfilter(line[0], line + 1, prev, stride, bpp);
    prev = line + 1;
  }
  out.image = cv::Mat(static_cast<int>(h), static_cast<int>(w), CV_8UC(bpp), out.storage.data + 1,
                      stride + 1);
  return out;
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

namespace {

// PreprocessDecoded for an image in BGR order (OpenCV's decoders; bgr) or
// RGB order (DecodePngFast), which for a 3-channel config may also be gray
// (replicated: resizing is per channel, so resizing the gray plane and then
// replicating it gives what replicating first gives) or RGBA (alpha dropped).
absl::Status ResizeCropNormalize(const cv::Mat& img, bool bgr, const PreprocessConfig& config,
                                 float* dst) {
  if (auto s = config.Validate(); !s.ok()) return s;
  const bool channels_ok =
      img.channels() == config.channels ||
      (!bgr && config.channels == 3 && (img.channels() == 1 || img.channels() == 4));
  if (img.empty() || img.depth() != CV_8U || !channels_ok) {
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
    const int ic = img.channels();  // input channels
    float scale[3], bias[3];
    for (int k = 0; k < c; ++k) {
      scale[k] = 1.0f / (255.0f * config.std[k]);
      bias[k] = -config.mean[k] / config.std[k];
    }
    for (int y = 0; y < crop; ++y) {
      const unsigned char* row = resized.ptr<unsigned char>(top + y) + left * ic;
      float* out = dst + static_cast<size_t>(y) * crop * c;
      if (c == 3 && ic == 1) {
        for (int x = 0; x < crop; ++x) {
          out[3 * x + 0] = row[x] * scale[0] + bias[0];
          out[3 * x + 1] = row[x] * scale[1] + bias[1];
          out[3 * x + 2] = row[x] * scale[2] + bias[2];
        }
      } else if (c == 3 && ic == 4) {
        for (int x = 0; x < crop; ++x) {
          out[3 * x + 0] = row[4 * x + 0] * scale[0] + bias[0];
          out[3 * x + 1] = row[4 * x + 1] * scale[1] + bias[1];
          out[3 * x + 2] = row[4 * x + 2] * scale[2] + bias[2];
        }
      } else if (c == 3 && bgr) {
        for (int x = 0; x < crop; ++x) {
          // OpenCV decodes to BGR; the model wants RGB.
          out[3 * x + 0] = row[3 * x + 2] * scale[0] + bias[0];
          out[3 * x + 1] = row[3 * x + 1] * scale[1] + bias[1];
          out[3 * x + 2] = row[3 * x + 0] * scale[2] + bias[2];
        }
      } else if (c == 3) {
        for (int x = 0; x < crop; ++x) {
          out[3 * x + 0] = row[3 * x + 0] * scale[0] + bias[0];
          out[3 * x + 1] = row[3 * x + 1] * scale[1] + bias[1];
          out[3 * x + 2] = row[3 * x + 2] * scale[2] + bias[2];
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

}  // namespace

absl::Status PreprocessDecoded(const cv::Mat& img, const PreprocessConfig& config, float* dst) {
  return ResizeCropNormalize(img, /*bgr=*/true, config, dst);
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
  if (header->format == ImageFormat::kPng && config.fast_png_decode) {
    DecodedImage decoded;
    try {
      decoded = DecodePngFast(bytes, static_cast<int>(config.channels));
    } catch (const std::exception& e) {  // a Mat allocation
      return absl::InvalidArgumentError(absl::StrCat("image could not be decoded: ", e.what()));
    }
    if (!decoded.image.empty()) return ResizeCropNormalize(decoded.image, /*bgr=*/false, config, dst);
    // Empty: a file for OpenCV's path (see DecodePngFast).
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
