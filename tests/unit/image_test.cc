#include "server/preprocess/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace ghostserve::preprocess {
namespace {

using ::testing::HasSubstr;

std::string TestDataPath(const std::string& name) {
  return std::string(GHOSTSERVE_TESTDATA) + "/" + name;
}

std::string ReadTestFile(const std::string& name) {
  std::ifstream in(TestDataPath(name), std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << TestDataPath(name);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string Encode(const cv::Mat& bgr, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<unsigned char> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf, params));
  return std::string(buf.begin(), buf.end());
}

// An RGB colour; cv::Scalar takes BGR.
struct Rgb {
  int r, g, b;
  cv::Scalar Bgr() const { return cv::Scalar(b, g, r); }
};

// What the ImageNet config must produce for 8-bit value `v` in channel `c`.
double ImageNetValue(int v, int c) {
  const double mean[3] = {0.485, 0.456, 0.406};
  const double std[3] = {0.229, 0.224, 0.225};
  return (v / 255.0 - mean[c]) / std[c];
}

// ImageNet-normalised [3,H,W] tensor back to 8-bit-scale RGB values.
torch::Tensor Denormalize(const torch::Tensor& chw) {
  const auto mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({3, 1, 1});
  const auto std = torch::tensor({0.229f, 0.224f, 0.225f}).view({3, 1, 1});
  return (chw * std + mean) * 255.0f;
}

torch::Tensor PreprocessOrDie(const std::string& bytes,
                              const PreprocessConfig& config = PreprocessConfig::ImageNet(),
                              const ImageLimits& limits = ImageLimits()) {
  auto t = Preprocess(bytes, config, limits);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : torch::Tensor();
}

double MeanAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().mean().item<double>();
}
double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A PNG with only the signature and an IHDR chunk (no image data).
std::string PngHeaderOnly(uint32_t width, uint32_t height) {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  s += std::string("\0\0\0\x0d", 4) + "IHDR";
  for (uint32_t v : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xFF);
  }
  s += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
  s += std::string("\0\0\0\0", 4);              // CRC (not checked before the limits)
  return s;
}

// SOI + a baseline SOF0 frame header declaring width x height + EOI.
std::string JpegHeaderOnly(uint16_t width, uint16_t height) {
  std::string s("\xFF\xD8", 2);
  s += std::string("\xFF\xC0\x00\x11\x08", 5);
  s += static_cast<char>(height >> 8);
  s += static_cast<char>(height & 0xFF);
  s += static_cast<char>(width >> 8);
  s += static_cast<char>(width & 0xFF);
  s += std::string("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);
  s += std::string("\xFF\xD9", 2);
  return s;
}

// Offset of the first SOFn marker in a JPEG (test files are baseline).
size_t FindSof(const std::string& jpeg) {
  for (size_t i = 2; i + 1 < jpeg.size(); ++i) {
    if (static_cast<unsigned char>(jpeg[i]) == 0xFF &&
        (static_cast<unsigned char>(jpeg[i + 1]) == 0xC0 ||
         static_cast<unsigned char>(jpeg[i + 1]) == 0xC2)) {
      return i;
    }
  }
  ADD_FAILURE() << "no SOF marker";
  return 0;
}

// --- ReadImageHeader -------------------------------------------------------

TEST(ReadImageHeaderTest, ReadsJpegSizeFromFrameHeader) {
  struct Case {
    const char* file;
    int64_t width, height;
  };
  for (const Case& c : {Case{"chelsea.jpg", 451, 300}, Case{"coffee.jpg", 600, 400},
                        Case{"astronaut.jpg", 384, 384},
                        // Stored rotated; the header gives the stored size.
                        Case{"chelsea_exif_rot.jpg", 300, 451}}) {
    auto h = ReadImageHeader(ReadTestFile(c.file));
    ASSERT_TRUE(h.ok()) << c.file << ": " << h.status();
    EXPECT_EQ(h->format, ImageFormat::kJpeg) << c.file;
    EXPECT_EQ(h->width, c.width) << c.file;
    EXPECT_EQ(h->height, c.height) << c.file;
  }
}

TEST(ReadImageHeaderTest, ReadsPngSizeFromIhdr) {
  for (const char* file : {"chelsea.png", "chelsea_gray.png", "chelsea_palette.png",
                           "chelsea_rgba.png", "chelsea_16bit.png"}) {
    auto h = ReadImageHeader(ReadTestFile(file));
    ASSERT_TRUE(h.ok()) << file << ": " << h.status();
    EXPECT_EQ(h->format, ImageFormat::kPng) << file;
    EXPECT_EQ(h->width, 451) << file;
    EXPECT_EQ(h->height, 300) << file;
  }
}

TEST(ReadImageHeaderTest, ReadsProgressiveJpegSize) {
  cv::Mat img(123, 77, CV_8UC3, cv::Scalar(10, 20, 30));
  const std::string jpeg = Encode(img, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1});
  auto h = ReadImageHeader(jpeg);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->format, ImageFormat::kJpeg);
  EXPECT_EQ(h->width, 77);
  EXPECT_EQ(h->height, 123);
}

TEST(ReadImageHeaderTest, ReadsLargeDeclaredSizesWithoutDecoding) {
  auto png = ReadImageHeader(PngHeaderOnly(30000, 20000));
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->width, 30000);
  EXPECT_EQ(png->height, 20000);
  auto jpeg = ReadImageHeader(JpegHeaderOnly(30000, 20000));
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  EXPECT_EQ(jpeg->width, 30000);
  EXPECT_EQ(jpeg->height, 20000);
}

TEST(ReadImageHeaderTest, RejectsUnknownMagic) {
  for (const std::string& bytes :
       {std::string("GIF89a\x01\x00\x01\x00", 10), std::string("BM\x36\x00\x00\x00", 6),
        std::string("RIFF\0\0\0\0WEBPVP8 ", 16), std::string("hello world"),
        std::string("\xFF\xD8", 2), std::string("\x89PNG", 4)}) {
    auto h = ReadImageHeader(bytes);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << bytes;
  }
}

TEST(ReadImageHeaderTest, RejectsEmpty) {
  EXPECT_EQ(ReadImageHeader("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadImageHeader(std::string_view()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ReadImageHeaderTest, RejectsEveryTruncatedPngHeader) {
  const std::string png = ReadTestFile("chelsea.png");
  // Signature (8) + length (4) + "IHDR" (4) + width (4) + height (4).
  for (size_t n = 1; n < 24; ++n) {
    EXPECT_EQ(ReadImageHeader(png.substr(0, n)).status().code(), absl::StatusCode::kInvalidArgument)
        << n << " bytes";
  }
  auto h = ReadImageHeader(png.substr(0, 24));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->width, 451);
}

TEST(ReadImageHeaderTest, RejectsEveryTruncatedJpegHeader) {
  for (const char* file : {"chelsea.jpg", "chelsea_exif_rot.jpg"}) {
    const std::string jpeg = ReadTestFile(file);
    const size_t sof = FindSof(jpeg);
    ASSERT_GT(sof, 2u);
    // The frame header's size ends 9 bytes after its marker.
    for (size_t n = 1; n < sof + 9; ++n) {
      EXPECT_EQ(ReadImageHeader(jpeg.substr(0, n)).status().code(),
                absl::StatusCode::kInvalidArgument)
          << file << " cut to " << n << " bytes";
    }
    auto h = ReadImageHeader(jpeg.substr(0, sof + 9));
    ASSERT_TRUE(h.ok()) << file << ": " << h.status();
  }
}

TEST(ReadImageHeaderTest, RejectsJpegWithoutFrameHeader) {
  // SOI, then a scan header with no frame header before it.
  EXPECT_EQ(ReadImageHeader(std::string("\xFF\xD8\xFF\xDA\x00\x08\x01\x01\x00\x00\x3F\x00", 12))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // SOI followed by bytes that are not a marker.
  EXPECT_EQ(ReadImageHeader(std::string("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00garbage-garbage", 26))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Preprocess: values -----------------------------------------------------

TEST(PreprocessTest, SolidColourGivesNormalisedRgbInEveryValue) {
  const Rgb colour{210, 120, 30};
  const cv::Mat img(300, 400, CV_8UC3, colour.Bgr());
  const torch::Tensor t = PreprocessOrDie(Encode(img, ".png"));
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 224, 224}));
  const int rgb[3] = {colour.r, colour.g, colour.b};
  for (int c = 0; c < 3; ++c) {
    const torch::Tensor plane = t[c];
    const double want = ImageNetValue(rgb[c], c);
    EXPECT_NEAR(plane.min().item<double>(), want, 1e-5) << "channel " << c;
    EXPECT_NEAR(plane.max().item<double>(), want, 1e-5) << "channel " << c;
  }
}

TEST(PreprocessTest, PreprocessIntoWritesExactlyOneHwcImage) {
  const Rgb colour{250, 5, 128};
  const cv::Mat img(240, 260, CV_8UC3, colour.Bgr());
  const std::string png = Encode(img, ".png");
  constexpr size_t kValues = 224 * 224 * 3;
  constexpr float kGuard = 12345.0f;
  std::vector<float> buf(kValues + 64, std::nanf(""));
  std::fill(buf.begin() + kValues, buf.end(), kGuard);
  ASSERT_TRUE(PreprocessInto(png, PreprocessConfig::ImageNet(), ImageLimits(), buf.data()).ok());
  const int rgb[3] = {colour.r, colour.g, colour.b};
  for (size_t i = 0; i < kValues; ++i) {
    // Interleaved R, G, B per pixel.
    ASSERT_NEAR(buf[i], ImageNetValue(rgb[i % 3], static_cast<int>(i % 3)), 1e-5) << i;
  }
  for (size_t i = kValues; i < buf.size(); ++i) ASSERT_EQ(buf[i], kGuard) << "wrote past the end";
}

TEST(PreprocessTest, ReturnsChwTensorWithHwcMemory) {
  const cv::Mat img(256, 256, CV_8UC3, cv::Scalar(1, 2, 3));
  const torch::Tensor t = PreprocessOrDie(Encode(img, ".png"));
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 224, 224}));
  EXPECT_EQ(t.scalar_type(), torch::kFloat);
  EXPECT_TRUE(t.permute({1, 2, 0}).is_contiguous());
}

TEST(PreprocessTest, CentreCropKeepsGeometryAndOrientation) {
  // 448x256: the shorter side is already 256, so no resampling blurs the
  // edges. The crop takes x in [112, 336) and y in [16, 240), so the
  // quadrant edges (x = 224, y = 128) land at column 112 and row 112.
  const Rgb tl{255, 0, 0}, tr{0, 255, 0}, bl{0, 0, 255}, br{255, 255, 255};
  cv::Mat img(256, 448, CV_8UC3);
  img(cv::Rect(0, 0, 224, 128)).setTo(tl.Bgr());
  img(cv::Rect(224, 0, 224, 128)).setTo(tr.Bgr());
  img(cv::Rect(0, 128, 224, 128)).setTo(bl.Bgr());
  img(cv::Rect(224, 128, 224, 128)).setTo(br.Bgr());
  const torch::Tensor t = PreprocessOrDie(Encode(img, ".png"));
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 224, 224}));
  const auto a = t.accessor<float, 3>();
  for (int y = 0; y < 224; ++y) {
    for (int x = 0; x < 224; ++x) {
      const Rgb& want = y < 112 ? (x < 112 ? tl : tr) : (x < 112 ? bl : br);
      const int rgb[3] = {want.r, want.g, want.b};
      for (int c = 0; c < 3; ++c) {
        ASSERT_NEAR(a[c][y][x], ImageNetValue(rgb[c], c), 1e-5)
            << "channel " << c << " at row " << y << " column " << x;
      }
    }
  }
}

TEST(PreprocessTest, ResizesShorterSideKeepingAspectRatio) {
  // 900x512 with an edge at x = 300. Resized to 450x256 the edge is at 150;
  // the crop starts at column 113, so the edge is at output column 37. Without
  // keeping the aspect ratio it would be at 300 * 224 / 900 = 74.7.
  const Rgb left{200, 10, 10}, right{10, 10, 200};
  cv::Mat img(512, 900, CV_8UC3, right.Bgr());
  img(cv::Rect(0, 0, 300, 512)).setTo(left.Bgr());
  const torch::Tensor t = PreprocessOrDie(Encode(img, ".png"));
  const auto a = t.accessor<float, 3>();
  for (int x = 0; x < 224; ++x) {
    if (x >= 35 && x <= 39) continue;  // resampling blurs the edge
    const Rgb& want = x < 37 ? left : right;
    EXPECT_NEAR(a[0][100][x], ImageNetValue(want.r, 0), 1e-4) << "column " << x;
    EXPECT_NEAR(a[2][100][x], ImageNetValue(want.b, 2), 1e-4) << "column " << x;
  }
}

TEST(PreprocessTest, ResizeZeroSquashesWholeImageToCrop) {
  // Same image; resize_shorter = 0 keeps all of it, so the edge lands at
  // 300 * 224 / 900 = 74.7.
  const Rgb left{200, 10, 10}, right{10, 10, 200};
  cv::Mat img(512, 900, CV_8UC3, right.Bgr());
  img(cv::Rect(0, 0, 300, 512)).setTo(left.Bgr());
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.resize_shorter = 0;
  const torch::Tensor t = PreprocessOrDie(Encode(img, ".png"), config);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 224, 224}));
  const auto a = t.accessor<float, 3>();
  for (int x = 0; x < 224; ++x) {
    if (x >= 72 && x <= 77) continue;
    const Rgb& want = x < 75 ? left : right;
    EXPECT_NEAR(a[0][100][x], ImageNetValue(want.r, 0), 1e-4) << "column " << x;
  }
}

TEST(PreprocessTest, CentreCropOffsetRoundsLikeTorchvision) {
  // torchvision's CenterCrop uses Python's round() on (size - crop) / 2,
  // which rounds halves to even: round(0.5) = 0, round(1.5) = 2,
  // round(2.5) = 2, round(3.5) = 4. Column x of the image has red = x, so
  // the first output column tells the offset.
  struct Case {
    int width;
    int offset;
  };
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.resize_shorter = 224;  // the image's shorter side: no resampling
  for (const Case& c : {Case{224, 0}, Case{225, 0}, Case{226, 1}, Case{227, 2}, Case{229, 2},
                        Case{231, 4}, Case{233, 4}}) {
    cv::Mat img(224, c.width, CV_8UC3);
    for (int x = 0; x < c.width; ++x) img.col(x).setTo(cv::Scalar(0, 0, x));
    const torch::Tensor t = PreprocessOrDie(Encode(img, ".png"), config);
    ASSERT_TRUE(t.defined());
    EXPECT_NEAR(t[0][0][0].item<double>(), ImageNetValue(c.offset, 0), 1e-5) << "width " << c.width;
    EXPECT_NEAR(t[0][0][223].item<double>(), ImageNetValue(c.offset + 223, 0), 1e-5)
        << "width " << c.width;
    // Same rule vertically: transpose the image.
    cv::Mat tall;
    cv::transpose(img, tall);
    const torch::Tensor v = PreprocessOrDie(Encode(tall, ".png"), config);
    ASSERT_TRUE(v.defined());
    EXPECT_NEAR(v[0][0][0].item<double>(), ImageNetValue(c.offset, 0), 1e-5)
        << "height " << c.width;
  }
}

TEST(PreprocessTest, GrayscaleConfigGivesOneNormalisedChannel) {
  const cv::Mat gray(240, 320, CV_8UC1, cv::Scalar(100));
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.channels = 1;
  config.mean = {0.5f};
  config.std = {0.25f};
  ASSERT_TRUE(config.Validate().ok());
  const torch::Tensor t = PreprocessOrDie(Encode(gray, ".png"), config);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{1, 224, 224}));
  const double want = (100 / 255.0 - 0.5) / 0.25;
  EXPECT_NEAR(t.min().item<double>(), want, 1e-5);
  EXPECT_NEAR(t.max().item<double>(), want, 1e-5);
}

TEST(PreprocessTest, GrayscaleConfigConvertsColourImage) {
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.channels = 1;
  config.mean = {0.5f};
  config.std = {0.25f};
  // PIL's "L" conversion and OpenCV's both use 0.299 R + 0.587 G + 0.114 B.
  const torch::Tensor from_gray = PreprocessOrDie(ReadTestFile("chelsea_gray.png"), config);
  const torch::Tensor from_rgb = PreprocessOrDie(ReadTestFile("chelsea.png"), config);
  ASSERT_EQ(from_rgb.sizes(), (std::vector<int64_t>{1, 224, 224}));
  // One 8-bit level is 1 / (255 * 0.25) = 0.016.
  EXPECT_LT(MaxAbsDiff(from_gray, from_rgb), 0.035);
}

TEST(PreprocessTest, GrayImageWithColourConfigRepeatsTheValue) {
  const torch::Tensor t = PreprocessOrDie(ReadTestFile("chelsea_gray.png"));
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 224, 224}));
  const torch::Tensor px = Denormalize(t);
  EXPECT_LT(MaxAbsDiff(px[0], px[1]), 1e-3);
  EXPECT_LT(MaxAbsDiff(px[0], px[2]), 1e-3);
}

// --- Preprocess: the test files ---------------------------------------------

TEST(PreprocessTest, EveryTestFileDecodesToFiniteImageNetTensor) {
  for (const char* file : {"chelsea.png", "chelsea_gray.png", "chelsea_palette.png",
                           "chelsea_rgba.png", "chelsea_16bit.png", "chelsea.jpg",
                           "chelsea_exif_rot.jpg", "coffee.jpg", "astronaut.jpg"}) {
    SCOPED_TRACE(file);
    const torch::Tensor t = PreprocessOrDie(ReadTestFile(file));
    ASSERT_TRUE(t.defined());
    EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 224, 224}));
    EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
    // Pixels within [0, 255] after undoing the normalisation...
    const torch::Tensor px = Denormalize(t);
    EXPECT_GE(px.min().item<double>(), -1e-3);
    EXPECT_LE(px.max().item<double>(), 255.0 + 1e-3);
    // ...and a photograph, not a flat fill.
    EXPECT_GT(px.std().item<double>(), 20.0);
  }
}

TEST(PreprocessTest, SixteenBitPngMatchesEightBitPng) {
  const torch::Tensor eight = PreprocessOrDie(ReadTestFile("chelsea.png"));
  const torch::Tensor sixteen = PreprocessOrDie(ReadTestFile("chelsea_16bit.png"));
  EXPECT_LT(MaxAbsDiff(eight, sixteen), 0.05);
}

TEST(PreprocessTest, OpaqueRgbaPngMatchesRgbPng) {
  const torch::Tensor rgb = PreprocessOrDie(ReadTestFile("chelsea.png"));
  const torch::Tensor rgba = PreprocessOrDie(ReadTestFile("chelsea_rgba.png"));
  EXPECT_LT(MaxAbsDiff(rgb, rgba), 1e-5);
}

TEST(PreprocessTest, PalettePngIsCloseToRgbPng) {
  const torch::Tensor rgb = PreprocessOrDie(ReadTestFile("chelsea.png"));
  const torch::Tensor palette = PreprocessOrDie(ReadTestFile("chelsea_palette.png"));
  // 256 adaptive colours: close on average, not exact.
  EXPECT_LT(MeanAbsDiff(rgb, palette), 0.05);
}

TEST(PreprocessTest, JpegIsCloseToPngOfSamePhoto) {
  const torch::Tensor png = PreprocessOrDie(ReadTestFile("chelsea.png"));
  const torch::Tensor jpeg = PreprocessOrDie(ReadTestFile("chelsea.jpg"));
  EXPECT_LT(MeanAbsDiff(png, jpeg), 0.05);
  // Channel order: the cat photo is reddish-brown, red mean above blue mean.
  const torch::Tensor px = Denormalize(jpeg);
  EXPECT_GT(px[0].mean().item<double>(), px[2].mean().item<double>() + 10.0);
}

TEST(PreprocessTest, LargeJpegDecodesAtReducedScaleWithinResizeError) {
  // A 4000x2660 photograph: the shorter side is 10x the resize target.
  std::string png = ReadTestFile("chelsea.png");
  cv::Mat small =
      cv::imdecode(cv::Mat(1, static_cast<int>(png.size()), CV_8UC1, png.data()), cv::IMREAD_COLOR);
  ASSERT_FALSE(small.empty());
  cv::Mat large;
  cv::resize(small, large, cv::Size(4000, 2660), 0, 0, cv::INTER_CUBIC);
  const std::string jpeg = Encode(large, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  auto header = ReadImageHeader(jpeg);
  ASSERT_TRUE(header.ok()) << header.status();

  PreprocessConfig reduced = PreprocessConfig::ImageNet();
  PreprocessConfig full = reduced;
  full.reduced_jpeg_decode = false;
  EXPECT_EQ(JpegDecodeReduction(*header, reduced), 4);  // 2660 / 4 = 665 >= 2 * 256
  EXPECT_EQ(JpegDecodeReduction(*header, full), 1);

  const torch::Tensor a = PreprocessOrDie(jpeg, reduced);
  const torch::Tensor b = PreprocessOrDie(jpeg, full);
  ASSERT_TRUE(a.defined() && b.defined());
  // Well within what separates two encodings of one photo (JpegIsCloseToPng).
  EXPECT_LT(MeanAbsDiff(a, b), 0.02);
}

TEST(PreprocessTest, SmallJpegAndPngAreDecodedAtFullScale) {
  for (const char* name : {"chelsea.jpg", "coffee.jpg", "astronaut.jpg", "chelsea.png"}) {
    auto header = ReadImageHeader(ReadTestFile(name));
    ASSERT_TRUE(header.ok()) << name;
    EXPECT_EQ(JpegDecodeReduction(*header, PreprocessConfig::ImageNet()), 1) << name;
  }
  ImageHeader big_png{ImageFormat::kPng, 8000, 6000};
  EXPECT_EQ(JpegDecodeReduction(big_png, PreprocessConfig::ImageNet()), 1);
}

TEST(PreprocessTest, HonoursExifOrientationOfRotatedJpeg) {
  const torch::Tensor upright = PreprocessOrDie(ReadTestFile("chelsea.jpg"));
  const torch::Tensor rotated = PreprocessOrDie(ReadTestFile("chelsea_exif_rot.jpg"));
  ASSERT_TRUE(upright.defined() && rotated.defined());
  ASSERT_EQ(rotated.sizes(), upright.sizes());
  // What the cat looks like when turned by 90, 180, 270 degrees: the result
  // must be much closer to the upright cat than any of those.
  double nearest_wrong = 1e9;
  for (int k = 1; k <= 3; ++k) {
    nearest_wrong = std::min(nearest_wrong, MeanAbsDiff(rotated, torch::rot90(upright, k, {1, 2})));
  }
  const double diff = MeanAbsDiff(rotated, upright);
  EXPECT_LT(diff, 0.05);
  EXPECT_LT(diff * 5, nearest_wrong) << "diff " << diff << ", nearest wrong " << nearest_wrong;
}

// Builds a JPEG whose stored pixels are `stored` and whose EXIF orientation
// tag is `orientation`, in big-endian ("MM") or little-endian ("II") TIFF.
std::string JpegWithOrientation(const cv::Mat& stored, int orientation, bool big_endian) {
  const std::string jpeg = Encode(stored, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  std::string tiff;
  auto u16 = [&](int v) {
    const char hi = static_cast<char>((v >> 8) & 0xFF), lo = static_cast<char>(v & 0xFF);
    tiff += big_endian ? std::string{hi, lo} : std::string{lo, hi};
  };
  auto u32 = [&](uint32_t v) {
    if (big_endian) {
      u16(static_cast<int>(v >> 16));
      u16(static_cast<int>(v & 0xFFFF));
    } else {
      u16(static_cast<int>(v & 0xFFFF));
      u16(static_cast<int>(v >> 16));
    }
  };
  tiff += big_endian ? "MM" : "II";
  u16(42);
  u32(8);       // IFD0 offset
  u16(1);       // one entry
  u16(0x0112);  // Orientation
  u16(3);       // SHORT
  u32(1);       // count
  u16(orientation);
  u16(0);  // padding of the 4-byte value field
  u32(0);  // no next IFD
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  const size_t len = payload.size() + 2;
  std::string app1("\xFF\xE1", 2);
  app1 += static_cast<char>(len >> 8);
  app1 += static_cast<char>(len & 0xFF);
  app1 += payload;
  // After SOI, before the encoder's APP0.
  return jpeg.substr(0, 2) + app1 + jpeg.substr(2);
}

TEST(PreprocessTest, HonoursEveryExifOrientation) {
  // Upright: a 2x2 grid of distinct colours, wider than tall.
  const Rgb tl{230, 20, 20}, tr{20, 230, 20}, bl{20, 20, 230}, br{230, 230, 230};
  cv::Mat upright(160, 224, CV_8UC3);
  upright(cv::Rect(0, 0, 112, 80)).setTo(tl.Bgr());
  upright(cv::Rect(112, 0, 112, 80)).setTo(tr.Bgr());
  upright(cv::Rect(0, 80, 112, 80)).setTo(bl.Bgr());
  upright(cv::Rect(112, 80, 112, 80)).setTo(br.Bgr());

  // The stored pixels for each tag: the inverse of the transform the tag
  // asks the viewer to apply (EXIF 2.3, Orientation).
  auto stored_for = [&](int orientation) {
    cv::Mat s;
    switch (orientation) {
      case 1:
        s = upright.clone();
        break;
      case 2:
        cv::flip(upright, s, 1);
        break;  // mirrored
      case 3:
        cv::rotate(upright, s, cv::ROTATE_180);
        break;
      case 4:
        cv::flip(upright, s, 0);
        break;  // upside down
      case 5:
        cv::transpose(upright, s);
        break;  // main diagonal
      case 6:
        cv::rotate(upright, s, cv::ROTATE_90_COUNTERCLOCKWISE);
        break;   // view: 90 CW
      case 7: {  // anti-diagonal
        cv::Mat t;
        cv::transpose(upright, t);
        cv::rotate(t, s, cv::ROTATE_180);
        break;
      }
      case 8:
        cv::rotate(upright, s, cv::ROTATE_90_CLOCKWISE);
        break;  // view: 90 CCW
    }
    return s;
  };

  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.resize_shorter = 0;  // whole image, squashed to 64x64
  config.crop_size = 64;
  for (bool big_endian : {true, false}) {
    for (int orientation = 1; orientation <= 8; ++orientation) {
      SCOPED_TRACE(testing::Message()
                   << "orientation " << orientation << (big_endian ? " MM" : " II"));
      const torch::Tensor t = PreprocessOrDie(
          JpegWithOrientation(stored_for(orientation), orientation, big_endian), config);
      ASSERT_TRUE(t.defined());
      const torch::Tensor px = Denormalize(t);
      struct Probe {
        int y, x;
        Rgb want;
      };
      for (const Probe& p :
           {Probe{16, 16, tl}, Probe{16, 48, tr}, Probe{48, 16, bl}, Probe{48, 48, br}}) {
        const int want[3] = {p.want.r, p.want.g, p.want.b};
        for (int c = 0; c < 3; ++c) {
          EXPECT_NEAR(px[c][p.y][p.x].item<double>(), want[c], 12.0)
              << "channel " << c << " at (" << p.y << ", " << p.x << ")";
        }
      }
    }
  }
}

TEST(PreprocessTest, IgnoresMalformedExifAndStillDecodes) {
  const cv::Mat img(64, 96, CV_8UC3, cv::Scalar(40, 80, 160));
  const std::string jpeg = Encode(img, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  const std::vector<std::string> payloads = {
      std::string("Exif\0\0", 6),                             // no TIFF header
      std::string("Exif\0\0MM\0\x2a\xff\xff\xff\xff", 14),    // IFD offset out of range
      std::string("Exif\0\0II\x2a\0\x08\0\0\0\xff\xff", 16),  // 65535 entries, none there
      std::string("Exif\0\0XX\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03", 20),  // bad byte order
  };
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.crop_size = 32;
  config.resize_shorter = 0;
  for (const std::string& payload : payloads) {
    const size_t len = payload.size() + 2;
    std::string app1("\xFF\xE1", 2);
    app1 += static_cast<char>(len >> 8);
    app1 += static_cast<char>(len & 0xFF);
    app1 += payload;
    const std::string bytes = jpeg.substr(0, 2) + app1 + jpeg.substr(2);
    auto t = Preprocess(bytes, config, ImageLimits());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->sizes(), (std::vector<int64_t>{3, 32, 32}));
    EXPECT_NEAR(Denormalize(*t)[0].mean().item<double>(), 160, 4.0);
  }
}

// --- Preprocess: limits and bad input ---------------------------------------

TEST(PreprocessTest, RefusesHugeDeclaredPngBeforeDecoding) {
  // Only a header: decoding would fail differently, so the message shows the
  // refusal came from the declared size.
  auto t = Preprocess(PngHeaderOnly(30000, 30000), PreprocessConfig::ImageNet(), ImageLimits());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("30000x30000"));
}

TEST(PreprocessTest, RefusesHugeDeclaredJpegBeforeDecoding) {
  auto t = Preprocess(JpegHeaderOnly(30000, 30000), PreprocessConfig::ImageNet(), ImageLimits());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("30000x30000"));
}

TEST(PreprocessTest, RefusesTooManyPixelsEvenWithSidesInLimit) {
  // 10000 x 5000 = 50M pixels > 40M, each side < 16384.
  auto t = Preprocess(PngHeaderOnly(10000, 5000), PreprocessConfig::ImageNet(), ImageLimits());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("10000x5000"));
}

TEST(PreprocessTest, RefusesZeroDeclaredSize) {
  for (const std::string& bytes : {PngHeaderOnly(0, 100), PngHeaderOnly(100, 0),
                                   JpegHeaderOnly(0, 100), JpegHeaderOnly(100, 0)}) {
    EXPECT_EQ(Preprocess(bytes, PreprocessConfig::ImageNet(), ImageLimits()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(PreprocessTest, AppliesSideAndPixelLimitsAtTheBoundary) {
  const std::string png = ReadTestFile("chelsea.png");  // 451x300
  ImageLimits limits;
  limits.max_side = 450;
  EXPECT_EQ(Preprocess(png, PreprocessConfig::ImageNet(), limits).status().code(),
            absl::StatusCode::kInvalidArgument);
  limits.max_side = 451;
  EXPECT_TRUE(Preprocess(png, PreprocessConfig::ImageNet(), limits).ok());

  limits = ImageLimits();
  limits.max_pixels = 451 * 300 - 1;
  EXPECT_EQ(Preprocess(png, PreprocessConfig::ImageNet(), limits).status().code(),
            absl::StatusCode::kInvalidArgument);
  limits.max_pixels = 451 * 300;
  EXPECT_TRUE(Preprocess(png, PreprocessConfig::ImageNet(), limits).ok());
}

TEST(PreprocessTest, RefusesMoreBytesThanMaxBytes) {
  const std::string jpeg = ReadTestFile("chelsea.jpg");
  ImageLimits limits;
  limits.max_bytes = jpeg.size() - 1;
  auto t = Preprocess(jpeg, PreprocessConfig::ImageNet(), limits);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr(std::to_string(jpeg.size())));
  limits.max_bytes = jpeg.size();
  EXPECT_TRUE(Preprocess(jpeg, PreprocessConfig::ImageNet(), limits).ok());
}

TEST(PreprocessTest, TruncatedFilesFailWithoutCrashing) {
  for (const char* file : {"chelsea.jpg", "chelsea.png", "coffee.jpg", "chelsea_16bit.png"}) {
    const std::string cut = ReadTestFile(file).substr(0, 200);
    ASSERT_TRUE(ReadImageHeader(cut).ok()) << file << ": the header survives the cut";
    auto t = Preprocess(cut, PreprocessConfig::ImageNet(), ImageLimits());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << file;
  }
}

TEST(PreprocessTest, GarbageAfterValidHeaderFailsWithoutCrashing) {
  std::string png = PngHeaderOnly(100, 100) + std::string(500, '\x5a');
  EXPECT_EQ(Preprocess(png, PreprocessConfig::ImageNet(), ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string jpeg = JpegHeaderOnly(100, 100);
  jpeg.insert(jpeg.size() - 2, std::string(500, '\x5a'));
  EXPECT_EQ(Preprocess(jpeg, PreprocessConfig::ImageNet(), ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PreprocessTest, CorruptedBytesNeverCrash) {
  // Cuts and flipped bytes all through the files: libjpeg/libpng may recover
  // (OK) or refuse (INVALID_ARGUMENT); nothing else, and no crash.
  for (const char* file : {"chelsea.jpg", "chelsea.png"}) {
    const std::string original = ReadTestFile(file);
    for (size_t pos = 30; pos < original.size(); pos += original.size() / 25) {
      for (bool cut : {true, false}) {
        std::string bytes = original;
        if (cut) {
          bytes.resize(pos);
        } else {
          for (size_t i = pos; i < std::min(pos + 16, bytes.size()); ++i) bytes[i] ^= 0x5A;
        }
        auto t = Preprocess(bytes, PreprocessConfig::ImageNet(), ImageLimits());
        if (t.ok()) {
          EXPECT_TRUE(torch::isfinite(*t).all().item<bool>()) << file << " at " << pos;
        } else {
          EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
              << file << " at " << pos << ": " << t.status();
        }
      }
    }
  }
}

// --- PreprocessConfig -------------------------------------------------------

TEST(PreprocessConfigTest, ImageNetDefaultsAreValid) {
  const PreprocessConfig c = PreprocessConfig::ImageNet();
  EXPECT_TRUE(c.Validate().ok());
  EXPECT_EQ(c.resize_shorter, 256);
  EXPECT_EQ(c.crop_size, 224);
  EXPECT_EQ(c.channels, 3);
}

TEST(PreprocessConfigTest, ValidateRejectsBadValues) {
  const std::vector<std::pair<const char*, std::function<void(PreprocessConfig&)>>> cases = {
      {"channels 2", [](PreprocessConfig& c) { c.channels = 2; }},
      {"channels 4", [](PreprocessConfig& c) { c.channels = 4; }},
      {"crop 8", [](PreprocessConfig& c) { c.crop_size = 8; }},
      {"crop 2048", [](PreprocessConfig& c) { c.crop_size = 2048; }},
      {"resize below crop", [](PreprocessConfig& c) { c.resize_shorter = 200; }},
      {"resize 5000", [](PreprocessConfig& c) { c.resize_shorter = 5000; }},
      {"one mean for RGB", [](PreprocessConfig& c) { c.mean = {0.5f}; }},
      {"one std for RGB", [](PreprocessConfig& c) { c.std = {0.5f}; }},
      {"zero std",
       [](PreprocessConfig& c) {
         c.std = {0.2f, 0.0f, 0.2f};
       }},
      {"NaN std",
       [](PreprocessConfig& c) {
         c.std = {0.2f, std::nanf(""), 0.2f};
       }},
  };
  for (const auto& [what, mutate] : cases) {
    PreprocessConfig c = PreprocessConfig::ImageNet();
    mutate(c);
    EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument) << what;
  }
}

TEST(PreprocessTest, RefusesInvalidConfigInsteadOfReadingPastIt) {
  // One mean/std value for three channels: used as is, the normalisation
  // would read past the vectors.
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.mean = {0.5f};
  config.std = {0.5f};
  const cv::Mat img(224, 224, CV_8UC3, cv::Scalar(1, 2, 3));
  const std::string png = Encode(img, ".png");
  auto t = Preprocess(png, config, ImageLimits());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> dst(224 * 224 * 3);
  EXPECT_EQ(PreprocessInto(png, config, ImageLimits(), dst.data()).code(),
            absl::StatusCode::kInvalidArgument);

  // Four channels: one more than the normalisation tables hold.
  config.channels = 4;
  config.mean = {0.5f, 0.5f, 0.5f, 0.5f};
  config.std = {0.5f, 0.5f, 0.5f, 0.5f};
  EXPECT_EQ(Preprocess(png, config, ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A negative crop size must not reach the tensor allocation (which throws).
  config = PreprocessConfig::ImageNet();
  config.crop_size = -1;
  EXPECT_EQ(Preprocess(png, config, ImageLimits()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- PNG: the fast path (libdeflate + our unfiltering) against OpenCV -----

// PNG writing by hand, to control what encoders choose: the filter of each
// row, IDAT splits, interlacing, extra chunks. Deflate "stored" blocks need
// no compressor.
uint32_t Crc32(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::string Be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string Chunk(const std::string& type, const std::string& data) {
  return Be32(static_cast<uint32_t>(data.size())) + type + data + Be32(Crc32(type + data));
}

std::string ZlibStored(const std::string& raw) {
  std::string z("\x78\x01", 2);
  size_t i = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - i);
    const bool last = i + n == raw.size();
    z += static_cast<char>(last ? 1 : 0);
    z += static_cast<char>(n & 0xFF);
    z += static_cast<char>(n >> 8);
    z += static_cast<char>(~n & 0xFF);
    z += static_cast<char>((~n >> 8) & 0xFF);
    z += raw.substr(i, n);
    i += n;
  } while (i < raw.size());
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  return z + Be32((b << 16) | a);
}

int PaethPredictor(int a, int b, int c) {
  const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
  return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

// Filters one row with PNG filter `f` (bpp bytes per pixel).
std::string FilterRow(int f, const std::string& row, const std::string& prev, int bpp) {
  std::string out(1, static_cast<char>(f));
  for (size_t i = 0; i < row.size(); ++i) {
    const int x = static_cast<unsigned char>(row[i]);
    const int a = i >= static_cast<size_t>(bpp) ? static_cast<unsigned char>(row[i - bpp]) : 0;
    const int b = static_cast<unsigned char>(prev[i]);
    const int c = i >= static_cast<size_t>(bpp) ? static_cast<unsigned char>(prev[i - bpp]) : 0;
    const int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : PaethPredictor(a, b, c);
    out += static_cast<char>((x - pred) & 0xFF);
  }
  return out;
}

struct PngSpec {
  int colour_type = 2;  // 0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA
  int bit_depth = 8;
  bool interlaced = false;
  int idat_chunks = 1;
  std::string before_idat;  // extra chunks, already framed
  std::string after_idat;
  int filter = -1;  // -1: row y uses filter y % 5
};

// `pixels`: rows of samples as stored (RGB order, 8- or 16-bit big-endian).
std::string MakePng(const std::vector<std::string>& pixels, int width, const PngSpec& spec) {
  const int height = static_cast<int>(pixels.size());
  const int channels = spec.colour_type == 2 ? 3 : spec.colour_type == 6 ? 4
                       : spec.colour_type == 4 ? 2 : 1;
  const int bpp = std::max(1, channels * spec.bit_depth / 8);
  std::string raw;
  auto emit = [&](const std::vector<std::string>& rows) {
    std::string prev(rows.empty() ? 0 : rows[0].size(), '\0');
    for (size_t y = 0; y < rows.size(); ++y) {
      const int f = spec.filter >= 0 ? spec.filter : static_cast<int>(y % 5);
      raw += FilterRow(f, rows[y], prev, bpp);
      prev = rows[y];
    }
  };
  if (!spec.interlaced) {
    emit(pixels);
  } else {
    static const int x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
    static const int dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    for (int pass = 0; pass < 7; ++pass) {
      std::vector<std::string> rows;
      for (int y = y0[pass]; y < height; y += dy[pass]) {
        std::string row;
        for (int x = x0[pass]; x < width; x += dx[pass]) row += pixels[y].substr(x * bpp, bpp);
        if (!row.empty()) rows.push_back(row);
      }
      emit(rows);
    }
  }
  std::string ihdr = Be32(width) + Be32(height);
  ihdr += static_cast<char>(spec.bit_depth);
  ihdr += static_cast<char>(spec.colour_type);
  ihdr += std::string("\0\0", 2);
  ihdr += static_cast<char>(spec.interlaced ? 1 : 0);
  std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + Chunk("IHDR", ihdr) + spec.before_idat;
  const std::string z = ZlibStored(raw);
  const size_t part = (z.size() + spec.idat_chunks - 1) / spec.idat_chunks;
  for (size_t i = 0; i < z.size(); i += part) png += Chunk("IDAT", z.substr(i, part));
  return png + spec.after_idat + Chunk("IEND", "");
}

// Rows of random samples, `bytes_per_pixel` per pixel.
std::vector<std::string> RandomRows(int width, int height, int bytes_per_pixel, uint32_t seed) {
  std::vector<std::string> rows(height, std::string(static_cast<size_t>(width) * bytes_per_pixel, '\0'));
  uint32_t x = seed;
  for (auto& row : rows) {
    for (char& c : row) {
      x = x * 1664525u + 1013904223u;
      c = static_cast<char>(x >> 24);
    }
  }
  return rows;
}

PreprocessConfig GrayModelConfig() {
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.channels = 1;
  config.mean = {0.5f};
  config.std = {0.25f};
  return config;
}

// The largest difference between the fast path and OpenCV's (the old one)
// for `bytes`; both must succeed.
double FastVsOpenCv(const std::string& bytes, PreprocessConfig config) {
  config.fast_png_decode = true;
  const torch::Tensor fast = PreprocessOrDie(bytes, config);
  config.fast_png_decode = false;
  const torch::Tensor opencv = PreprocessOrDie(bytes, config);
  if (!fast.defined() || !opencv.defined()) return 1e9;
  return MaxAbsDiff(fast, opencv);
}

std::vector<PreprocessConfig> PngTestConfigs() {
  PreprocessConfig area = PreprocessConfig::ImageNet();
  area.interpolation = Interpolation::kArea;
  PreprocessConfig squash = PreprocessConfig::ImageNet();
  squash.resize_shorter = 0;
  squash.crop_size = 64;
  PreprocessConfig gray_area = GrayModelConfig();
  gray_area.interpolation = Interpolation::kArea;
  return {PreprocessConfig::ImageNet(), area, squash, GrayModelConfig(), gray_area};
}

// Tolerance: none. The fast path must give OpenCV's pixels exactly.
TEST(PngFastPathTest, EveryTestFilePngDecodesExactlyAsOpenCv) {
  for (const char* file : {"chelsea.png", "chelsea_gray.png", "chelsea_palette.png",
                           "chelsea_rgba.png", "chelsea_16bit.png"}) {
    const std::string png = ReadTestFile(file);
    for (const PreprocessConfig& config : PngTestConfigs()) {
      EXPECT_EQ(FastVsOpenCv(png, config), 0.0) << file << " channels " << config.channels;
    }
  }
}

TEST(PngFastPathTest, OpenCvEncodedPhotosAtEveryLevelAndStrategyDecodeExactly) {
  // libpng picks each row's filter adaptively; real photo content, resized
  // so that the shorter side is both above and below 256.
  const std::string jpeg = ReadTestFile("coffee.jpg");
  cv::Mat photo =
      cv::imdecode(cv::Mat(1, static_cast<int>(jpeg.size()), CV_8UC1, const_cast<char*>(jpeg.data())),
                   cv::IMREAD_COLOR);
  ASSERT_FALSE(photo.empty());
  cv::Mat rgba, gray, big;
  cv::cvtColor(photo, rgba, cv::COLOR_BGR2BGRA);
  for (int y = 0; y < rgba.rows; ++y) {
    for (int x = 0; x < rgba.cols; ++x) rgba.at<cv::Vec4b>(y, x)[3] = static_cast<uchar>(x + y);
  }
  cv::cvtColor(photo, gray, cv::COLOR_BGR2GRAY);
  cv::resize(photo, big, cv::Size(1000, 667), 0, 0, cv::INTER_CUBIC);
  for (const cv::Mat* img : {&photo, &rgba, &gray, &big}) {
    for (int level : {0, 1, 6, 9}) {
      for (int strategy : {cv::IMWRITE_PNG_STRATEGY_DEFAULT, cv::IMWRITE_PNG_STRATEGY_FILTERED,
                           cv::IMWRITE_PNG_STRATEGY_RLE}) {
        const std::string png = Encode(
            *img, ".png", {cv::IMWRITE_PNG_COMPRESSION, level, cv::IMWRITE_PNG_STRATEGY, strategy});
        for (const PreprocessConfig& config : PngTestConfigs()) {
          SCOPED_TRACE(testing::Message() << img->channels() << " channels, level " << level
                                          << ", strategy " << strategy << ", config channels "
                                          << config.channels);
          EXPECT_EQ(FastVsOpenCv(png, config), 0.0);
        }
      }
    }
  }
}

TEST(PngFastPathTest, EveryFilterTypeAndIdatSplitDecodesExactly) {
  // Random samples defeat any predictor, so every filter's arithmetic
  // (wrap-around, Paeth's ties) is exercised on every byte.
  for (int colour_type : {0, 2, 6}) {
    const int bpp = colour_type == 0 ? 1 : colour_type == 2 ? 3 : 4;
    for (int filter : {-1, 0, 1, 2, 3, 4}) {
      for (int idats : {1, 3}) {
        for (const auto& [w, h] : {std::pair{257, 300}, std::pair{300, 229}, std::pair{17, 40}}) {
          PngSpec spec;
          spec.colour_type = colour_type;
          spec.filter = filter;
          spec.idat_chunks = idats;
          const std::string png = MakePng(RandomRows(w, h, bpp, w * 7 + filter), w, spec);
          for (const PreprocessConfig& config : PngTestConfigs()) {
            if (config.channels == 1 && colour_type != 0) continue;  // OpenCV's path anyway
            SCOPED_TRACE(testing::Message() << "colour type " << colour_type << ", filter "
                                            << filter << ", " << idats << " IDATs, " << w << "x"
                                            << h << ", config channels " << config.channels);
            EXPECT_EQ(FastVsOpenCv(png, config), 0.0);
          }
        }
      }
    }
  }
}

TEST(PngFastPathTest, FastPathGivesTheStoredPixels) {
  // Not only the same as OpenCV: the stored samples themselves. An RGB PNG
  // already 224x224 with resize 224 is neither resized nor cropped.
  const auto rows = RandomRows(224, 224, 3, 99);
  PngSpec spec;
  const std::string png = MakePng(rows, 224, spec);
  PreprocessConfig config = PreprocessConfig::ImageNet();
  config.resize_shorter = 224;
  const torch::Tensor px = Denormalize(PreprocessOrDie(png, config));
  ASSERT_TRUE(px.defined());
  for (int y = 0; y < 224; y += 37) {
    for (int x = 0; x < 224; x += 13) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_NEAR(px[c][y][x].item<double>(), static_cast<unsigned char>(rows[y][3 * x + c]), 1e-3)
            << y << ", " << x << ", " << c;
      }
    }
  }
}

TEST(PngFastPathTest, VariantsForOpenCvsPathDecodeExactlyAsBefore) {
  // Interlaced, 16-bit, palette, gray + alpha, 1-bit gray: OpenCV decodes
  // them, as before; colour-space chunks for a gray config; eXIf (OpenCV
  // applies the orientation).
  const int w = 123, h = 77;
  std::vector<std::string> files;
  for (int colour_type : {0, 2, 4, 6}) {
    for (int depth : {8, 16}) {
      for (bool interlaced : {false, true}) {
        const int channels = colour_type == 2 ? 3 : colour_type == 6 ? 4 : colour_type == 4 ? 2 : 1;
        PngSpec spec;
        spec.colour_type = colour_type;
        spec.bit_depth = depth;
        spec.interlaced = interlaced;
        files.push_back(MakePng(RandomRows(w, h, channels * depth / 8, 5 + colour_type), w, spec));
      }
    }
  }
  {
    PngSpec palette;
    palette.colour_type = 3;
    std::string plte;
    for (int i = 0; i < 256; ++i) plte += std::string{static_cast<char>(i), static_cast<char>(255 - i), static_cast<char>(i * 7)};
    palette.before_idat = Chunk("PLTE", plte) + Chunk("tRNS", std::string(256, '\x40'));
    files.push_back(MakePng(RandomRows(w, h, 1, 3), w, palette));
    PngSpec one_bit;
    one_bit.colour_type = 0;
    one_bit.bit_depth = 1;
    files.push_back(MakePng(RandomRows((w + 7) / 8, h, 1, 4), w, one_bit));
  }
  // gAMA 1/2.2 and sRGB: libpng's rgb_to_gray then works in linear light.
  for (const std::string& extra : {Chunk("gAMA", Be32(45455)), Chunk("sRGB", std::string(1, '\0'))}) {
    for (int colour_type : {0, 2}) {
      PngSpec spec;
      spec.colour_type = colour_type;
      spec.before_idat = extra;
      files.push_back(MakePng(RandomRows(w, h, colour_type == 0 ? 1 : 3, 8), w, spec));
    }
  }
  for (const std::string& bytes : files) {
    for (const PreprocessConfig& config : PngTestConfigs()) {
      EXPECT_EQ(FastVsOpenCv(bytes, config), 0.0)
          << "file " << (&bytes - files.data()) << ", config channels " << config.channels;
    }
  }
}

TEST(PngFastPathTest, ExifOrientationInPngIsStillApplied) {
  // Stored 90 degrees counter-clockwise, orientation 6: upright after the
  // tag is applied (OpenCV reads eXIf before or after the image data).
  const std::string upright_png = ReadTestFile("chelsea.png");
  cv::Mat upright = cv::imdecode(
      cv::Mat(1, static_cast<int>(upright_png.size()), CV_8UC1, const_cast<char*>(upright_png.data())),
      cv::IMREAD_COLOR);
  ASSERT_FALSE(upright.empty());
  cv::Mat stored, rgb;
  cv::rotate(upright, stored, cv::ROTATE_90_COUNTERCLOCKWISE);
  cv::cvtColor(stored, rgb, cv::COLOR_BGR2RGB);
  std::vector<std::string> rows;
  for (int y = 0; y < rgb.rows; ++y) {
    rows.emplace_back(reinterpret_cast<const char*>(rgb.ptr(y)), rgb.cols * 3);
  }
  const std::string tiff = std::string("MM\0\x2a", 4) + Be32(8) + std::string("\0\x01\x01\x12\0\x03", 6) +
                           Be32(1) + std::string("\0\x06\0\0", 4) + Be32(0);
  const torch::Tensor want = PreprocessOrDie(upright_png);
  for (bool late : {false, true}) {
    PngSpec spec;
    (late ? spec.after_idat : spec.before_idat) = Chunk("eXIf", tiff);
    const std::string png = MakePng(rows, rgb.cols, spec);
    EXPECT_EQ(FastVsOpenCv(png, PreprocessConfig::ImageNet()), 0.0) << "late " << late;
    const torch::Tensor got = PreprocessOrDie(png);
    ASSERT_TRUE(got.defined());
    EXPECT_LT(MaxAbsDiff(got, want), 1e-5) << "late " << late;
  }
}

TEST(PngFastPathTest, CorruptPngsAreRefusedWithInvalidArgument) {
  PngSpec spec;
  const std::string good = MakePng(RandomRows(64, 48, 3, 1), 64, spec);
  ASSERT_TRUE(Preprocess(good, PreprocessConfig::ImageNet(), ImageLimits()).ok());
  const size_t idat = good.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  std::vector<std::pair<std::string, std::string>> cases;
  std::string bad_crc = good;
  bad_crc[good.size() - 12 - 1] ^= 1;  // last byte of the IDAT CRC
  cases.emplace_back("IDAT CRC", bad_crc);
  std::string bad_filter = good;
  bad_filter[idat + 4 + 2 + 5] = 7;  // first row's filter byte, after zlib and block headers
  cases.emplace_back("filter byte 7", bad_filter);
  std::string bad_adler = good;
  bad_adler[good.size() - 12 - 4 - 1] ^= 1;  // last byte of the Adler-32, then fix the CRC
  {
    const size_t len = (static_cast<size_t>(static_cast<unsigned char>(bad_adler[idat - 4])) << 24 | static_cast<size_t>(static_cast<unsigned char>(bad_adler[idat - 3])) << 16 | static_cast<size_t>(static_cast<unsigned char>(bad_adler[idat - 2])) << 8 | static_cast<unsigned char>(bad_adler[idat - 1]));
    const std::string crc = Be32(Crc32(bad_adler.substr(idat, 4 + len)));
    bad_adler.replace(idat + 4 + len, 4, crc);
  }
  cases.emplace_back("Adler-32", bad_adler);
  cases.emplace_back("no IEND", good.substr(0, good.size() - 12));
  for (size_t cut : {size_t{40}, good.size() / 2, good.size() - 20}) {
    cases.emplace_back("cut at " + std::to_string(cut), good.substr(0, cut));
  }
  for (const auto& [what, bytes] : cases) {
    for (bool fast : {true, false}) {
      PreprocessConfig config = PreprocessConfig::ImageNet();
      config.fast_png_decode = fast;
      auto t = Preprocess(bytes, config, ImageLimits());
      EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
          << what << (fast ? " (fast)" : " (OpenCV)");
      if (!t.ok()) {
        EXPECT_THAT(t.status().message(), HasSubstr("could not be decoded")) << what;
      }
    }
  }
}

TEST(PngFastPathTest, LimitsStillRefuseBeforeDecoding) {
  // A real, decodable PNG over the limits is refused by its header alone,
  // on the fast path as on OpenCV's.
  PngSpec spec;
  const std::string png = MakePng(RandomRows(300, 200, 3, 2), 300, spec);
  for (bool fast : {true, false}) {
    PreprocessConfig config = PreprocessConfig::ImageNet();
    config.fast_png_decode = fast;
    ImageLimits limits;
    limits.max_side = 299;
    auto t = Preprocess(png, config, limits);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr("300x200"));
    limits = ImageLimits();
    limits.max_pixels = 300 * 200 - 1;
    t = Preprocess(png, config, limits);
    EXPECT_THAT(t.status().message(), HasSubstr("300x200"));
    EXPECT_EQ(Preprocess(PngHeaderOnly(20000, 20000), config, ImageLimits()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ghostserve::preprocess
