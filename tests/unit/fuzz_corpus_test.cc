// Replays the preprocessing fuzzer's seed corpus (tests/fuzz/corpus) and every
// input that ever crashed or misbehaved (tests/fuzz/regressions) through
// PreprocessInto in the regular build, so `make test` keeps them fixed
// without clang or libFuzzer. Plus one test per bug the hardening found.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "server/preprocess/image_decode.h"
#include "tests/fuzz/fuzz_configs.h"

namespace ghostserve::preprocess {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<fs::path> FilesIn(const std::string& subdir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(GHOSTSERVE_FUZZ_DIR) / subdir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The fuzzer's limits and grayscale config (tests/fuzz/fuzz_configs.h).
using ghostserve::fuzz::FuzzLimits;
using ghostserve::fuzz::GrayConfig;

// OK or InvalidArgument, and on OK every value finite and in range.
void ExpectHandled(const fs::path& file, const PreprocessConfig& config,
                   const ImageLimits& limits) {
  const std::string bytes = ReadFile(file);
  const size_t n = static_cast<size_t>(config.crop_size * config.crop_size * config.channels);
  std::vector<float> out(n, std::nanf(""));
  const absl::Status s = PreprocessInto(bytes, config, limits, out.data());
  if (!s.ok()) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << file << ": " << s;
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % config.channels);
    ASSERT_GE(out[i], -config.mean[c] / config.std[c] - 1e-3f) << file << " value " << i;
    ASSERT_LE(out[i], (1.0f - config.mean[c]) / config.std[c] + 1e-3f) << file << " value " << i;
  }
}

void ReplayAll(const std::string& subdir) {
  const auto files = FilesIn(subdir);
  ASSERT_FALSE(files.empty()) << "no files in tests/fuzz/" << subdir;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    for (const ImageLimits& limits : {ImageLimits(), FuzzLimits()}) {
      ExpectHandled(f, PreprocessConfig::ImageNet(), limits);
      ExpectHandled(f, GrayConfig(), limits);
    }
  }
}

TEST(FuzzCorpusTest, EverySeedIsDecodedOrRefusedWithInvalidArgument) { ReplayAll("corpus"); }

TEST(FuzzCorpusTest, EveryRegressionIsDecodedOrRefusedWithInvalidArgument) {
  ReplayAll("regressions");
}

TEST(FuzzCorpusTest, SeedCorpusHoldsDecodableImagesOfBothFormats) {
  // The replay above proves nothing if every seed is refused.
  int jpeg = 0, png = 0;
  for (const auto& f : FilesIn("corpus")) {
    const std::string bytes = ReadFile(f);
    std::vector<float> out(224 * 224 * 3);
    if (!PreprocessInto(bytes, PreprocessConfig::ImageNet(), ImageLimits(), out.data()).ok()) {
      continue;
    }
    auto header = ReadImageHeader(bytes);
    ASSERT_TRUE(header.ok());
    (header->format == ImageFormat::kJpeg ? jpeg : png)++;
  }
  EXPECT_GE(jpeg, 5);
  EXPECT_GE(png, 5);
}

// Bug: "FF 00" was read as a marker with a length, so a decoy 16x16 frame
// header inside an APP0 segment passed the size limits while libjpeg, which
// skips "FF 00" as garbage, decoded the real 30000x30000 frame (2.7 GB).
TEST(FuzzCorpusTest, JpegWithStuffedByteBeforeDecoyFrameHeaderIsRefused) {
  const std::string bytes =
      ReadFile(fs::path(GHOSTSERVE_FUZZ_DIR) / "regressions/crafted-jpeg-ff00-decoy-sof.jpg");
  auto header = ReadImageHeader(bytes);
  ASSERT_FALSE(header.ok()) << "read " << header->width << "x" << header->height;
  EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> out(224 * 224 * 3);
  EXPECT_EQ(PreprocessInto(bytes, PreprocessConfig::ImageNet(), ImageLimits(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

// Bug: a 1 x 16384 image (within every limit) was resized to 256 x 4194304
// (3 GB) before the centre crop. Now the longer side is cut to 16:1 first;
// this checks that the cut keeps the crop's content: an image of aspect 20
// gives the same result as resizing all of it and cropping.
TEST(FuzzCorpusTest, ExtremeAspectRatioGivesSameCropAsFullResize) {
  cv::Mat img(400, 20, CV_8UC3);
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) {
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<unsigned char>(128 + 100 * std::sin(y / 7.0)),
                                          static_cast<unsigned char>(x * 12),
                                          static_cast<unsigned char>((x * 7 + y * 3) % 256));
    }
  }
  ASSERT_GT(img.rows, img.cols * kMaxResizeAspect);
  const PreprocessConfig config = PreprocessConfig::ImageNet();
  std::vector<float> got(224 * 224 * 3);
  ASSERT_TRUE(PreprocessDecoded(img, config, got.data()).ok());

  // Reference: shorter side to 256 (400 * 256 / 20 = 5120 rows), centre crop.
  cv::Mat full;
  cv::resize(img, full, cv::Size(256, 5120), 0, 0, cv::INTER_LINEAR);
  const int top = (5120 - 224) / 2, left = (256 - 224) / 2;
  double max_diff = 0;
  for (int y = 0; y < 224; ++y) {
    for (int x = 0; x < 224; ++x) {
      const cv::Vec3b bgr = full.at<cv::Vec3b>(top + y, left + x);
      for (int c = 0; c < 3; ++c) {
        const double want = (bgr[2 - c] / 255.0 - config.mean[c]) / config.std[c];
        max_diff = std::max(max_diff, std::abs(want - got[(y * 224 + x) * 3 + c]));
      }
    }
  }
  // One 8-bit level is 0.017 in these units; the cut is chosen so that the
  // sampling positions are the same, so the result should match exactly.
  EXPECT_LT(max_diff, 1e-4);
}

// Wraps OpenCV's default allocator and records the largest Mat it was asked
// for (frees go to the wrapped allocator, which owns each buffer).
class PeakAllocator : public cv::MatAllocator {
 public:
  explicit PeakAllocator(cv::MatAllocator* base) : base_(base) {}
  cv::UMatData* allocate(int dims, const int* sizes, int type, void* data, size_t* step,
                         cv::AccessFlag flags, cv::UMatUsageFlags usage) const override {
    size_t bytes = CV_ELEM_SIZE(type);
    for (int i = 0; i < dims; ++i) bytes *= static_cast<size_t>(sizes[i]);
    size_t seen = peak_.load();
    while (bytes > seen && !peak_.compare_exchange_weak(seen, bytes)) {
    }
    return base_->allocate(dims, sizes, type, data, step, flags, usage);
  }
  bool allocate(cv::UMatData* data, cv::AccessFlag flags, cv::UMatUsageFlags usage) const override {
    return base_->allocate(data, flags, usage);
  }
  void deallocate(cv::UMatData* data) const override { base_->deallocate(data); }
  size_t peak() const { return peak_.load(); }

 private:
  cv::MatAllocator* const base_;
  mutable std::atomic<size_t> peak_{0};
};

// The bug's symptom itself: before the fix a 1 x 4000 PNG made OpenCV
// allocate a 256 x 1024000 RGB image (786 MB).
TEST(FuzzCorpusTest, ExtremeAspectRatioAllocatesOnlyWhatTheCropNeeds) {
  cv::Mat img(4000, 1, CV_8UC3, cv::Scalar(1, 2, 3));
  std::vector<unsigned char> png;
  ASSERT_TRUE(cv::imencode(".png", img, png));
  cv::MatAllocator* const base = cv::Mat::getDefaultAllocator();
  PeakAllocator peak(base);
  cv::Mat::setDefaultAllocator(&peak);
  std::vector<float> out(224 * 224 * 3);
  const absl::Status s = PreprocessInto(std::string(png.begin(), png.end()),
                                        PreprocessConfig::ImageNet(), ImageLimits(), out.data());
  cv::Mat::setDefaultAllocator(base);
  ASSERT_TRUE(s.ok()) << s;
  // 256 x (256 * kMaxResizeAspect) x 3 bytes = 3 MB at most.
  EXPECT_LE(peak.peak(), size_t{256} * 256 * kMaxResizeAspect * 3);
  EXPECT_GT(peak.peak(), 0u) << "the allocator was not used; the test proves nothing";
}

TEST(FuzzCorpusTest, ExtremeAspectRatioAtTheServerLimitsIsServed) {
  for (const cv::Size size : {cv::Size(1, 16384), cv::Size(16384, 1)}) {
    cv::Mat img(size, CV_8UC3, cv::Scalar(10, 120, 240));
    std::vector<unsigned char> png;
    ASSERT_TRUE(cv::imencode(".png", img, png));
    std::vector<float> out(224 * 224 * 3);
    const absl::Status s = PreprocessInto(std::string(png.begin(), png.end()),
                                          PreprocessConfig::ImageNet(), ImageLimits(), out.data());
    ASSERT_TRUE(s.ok()) << size << ": " << s;
    // Solid colour in, solid colour out (RGB = 240, 120, 10).
    EXPECT_NEAR(out[0], (240 / 255.0 - 0.485) / 0.229, 1e-4);
    EXPECT_NEAR(out[224 * 224 * 3 - 1], (10 / 255.0 - 0.406) / 0.225, 1e-4);
  }
}

}  // namespace
}  // namespace ghostserve::preprocess
