#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "tools/train/dataset.h"

namespace ghostserve::train {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("train_dataset_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // IDX bytes: magic 0 0 8 rank, big-endian dims, data.
  static std::string Idx(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
    std::string s = {0, 0, 8, static_cast<char>(dims.size())};
    for (uint32_t d : dims) {
      for (int shift : {24, 16, 8, 0}) s.push_back(static_cast<char>((d >> shift) & 0xFF));
    }
    s.append(data.begin(), data.end());
    return s;
  }
  std::string Write(const std::string& name, const std::string& bytes, bool gzip = false) {
    const std::string path = (dir_ / name).string();
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary) << bytes;
    }
    return path;
  }
  // Grayscale, resized straight to crop x crop, Fashion-MNIST's statistics.
  static preprocess::PreprocessConfig FashionConfig(int crop) {
    preprocess::PreprocessConfig config;
    config.channels = 1;
    config.resize_shorter = 0;
    config.crop_size = crop;
    config.mean = {0.286f};
    config.std = {0.353f};
    return config;
  }

  static std::vector<uint8_t> Pixels(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 37 + (i / 7) * 11);
    return v;
  }
  fs::path dir_;
};

TEST_F(DatasetTest, ReadsPlainAndGzippedIdx) {
  const std::vector<uint8_t> data = Pixels(2 * 3 * 4, 5);
  for (bool gz : {false, true}) {
    auto t = ReadIdx(Write(gz ? "x.gz" : "x", Idx({2, 3, 4}, data), gz));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_THAT(t->sizes().vec(), ElementsAre(2, 3, 4));
    EXPECT_EQ(t->scalar_type(), torch::kUInt8);
    EXPECT_EQ(std::vector<uint8_t>(t->data_ptr<uint8_t>(), t->data_ptr<uint8_t>() + data.size()),
              data);
  }
}

TEST_F(DatasetTest, RejectsMalformedIdx) {
  EXPECT_THAT(ReadIdx(Write("magic", "\x01\x02\x08\x01\0\0\0\x01x")).status().message(),
              HasSubstr("bad magic"));
  std::string floats = Idx({1}, {0, 0, 0, 0});
  floats[2] = 0x0D;  // float data: not supported
  EXPECT_THAT(ReadIdx(Write("floats", floats)).status().message(), HasSubstr("bad magic"));
  EXPECT_THAT(ReadIdx(Write("short", Idx({2, 3}, Pixels(5, 0)))).status().message(),
              HasSubstr("dimensions need 6"));
  EXPECT_THAT(ReadIdx(Write("header", std::string("\0\0\x08\x03\0\0", 6))).status().message(),
              HasSubstr("truncated"));
  EXPECT_EQ(ReadIdx((dir_ / "missing").string()).status().code(), absl::StatusCode::kNotFound);
  Write("train-images-idx3-ubyte.gz", Idx({2, 2, 2}, Pixels(8, 0)), true);
  Write("train-labels-idx1-ubyte", Idx({3}, {0, 1, 2}));
  auto pair = FindIdxPair(dir_.string(), "train");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_THAT(ReadIdxPair(pair->first, pair->second).status().message(), HasSubstr("same N"));
  EXPECT_EQ(FindIdxPair(dir_.string(), "t10k").status().code(), absl::StatusCode::kNotFound);
}

// What the trainer feeds the network equals what the server computes from
// the same image sent as a PNG file.
TEST_F(DatasetTest, TrainingInputsEqualServedInputs) {
  const std::vector<uint8_t> data = Pixels(3 * 28 * 28, 9);
  auto raw = ReadIdx(Write("imgs", Idx({3, 28, 28}, data)));
  ASSERT_TRUE(raw.ok());
  preprocess::PreprocessConfig config = FashionConfig(64);
  auto trained = PreprocessRaw(*raw, config);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_THAT(trained->sizes().vec(), ElementsAre(3, 1, 64, 64));
  for (int i = 0; i < 3; ++i) {
    const cv::Mat img(28, 28, CV_8UC1, const_cast<uint8_t*>(data.data()) + i * 28 * 28);
    std::vector<unsigned char> png;
    ASSERT_TRUE(cv::imencode(".png", img, png));
    auto served = preprocess::Preprocess(std::string(png.begin(), png.end()), config,
                                         preprocess::ImageLimits{});
    ASSERT_TRUE(served.ok()) << served.status();
    EXPECT_TRUE(torch::equal((*trained)[i], served->contiguous())) << "image " << i;
  }
  config.channels = 3;
  config.mean = {0.5f, 0.5f, 0.5f};
  config.std = {0.5f, 0.5f, 0.5f};
  EXPECT_FALSE(PreprocessRaw(*raw, config).ok());  // IDX images are grayscale
}

TEST_F(DatasetTest, LoadsAnImageFolderWithSortedClasses) {
  preprocess::PreprocessConfig config;
  config.channels = 3;
  config.resize_shorter = 0;
  config.crop_size = 32;
  std::vector<std::pair<std::string, std::string>> files;  // path, class
  for (const std::string cls : {"zebra", "ant"}) {
    fs::create_directories(dir_ / "root" / cls);
    for (int i = 0; i < 2; ++i) {
      cv::Mat img(20 + i, 30, CV_8UC3, cv::Scalar(cls == "ant" ? 10 : 200, 40 * i, 90));
      const std::string path = (dir_ / "root" / cls / (std::to_string(i) + ".png")).string();
      ASSERT_TRUE(cv::imwrite(path, img));
      files.emplace_back(path, cls);
    }
  }
  std::ofstream(dir_ / "root" / "ant" / "readme.txt") << "ignored";
  auto d = LoadImageFolder((dir_ / "root").string(), config);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->classes, ElementsAre("ant", "zebra"));
  ASSERT_EQ(d->size(), 4);
  EXPECT_THAT(
      std::vector<int64_t>(d->labels.data_ptr<int64_t>(), d->labels.data_ptr<int64_t>() + 4),
      ElementsAre(0, 0, 1, 1));
  std::ifstream in(dir_ / "root" / "zebra" / "1.png", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto served = preprocess::Preprocess(bytes, config, preprocess::ImageLimits{});
  ASSERT_TRUE(served.ok());
  EXPECT_TRUE(torch::equal(d->images[3], served->contiguous()));

  std::ofstream(dir_ / "root" / "ant" / "broken.png") << "\x89PNG\r\n\x1a\n garbage";
  EXPECT_THAT(LoadImageFolder((dir_ / "root").string(), config).status().message(),
              HasSubstr("broken.png"));
}

TEST(SampleIndicesTest, DistinctSeededAndBounded) {
  const std::vector<int64_t> a = SampleIndices(1000, 50, 7);
  ASSERT_EQ(a.size(), 50u);
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 50u);  // no repeats
  for (int64_t i : a) {
    EXPECT_GE(i, 0);
    EXPECT_LT(i, 1000);
  }
  EXPECT_EQ(SampleIndices(1000, 50, 7), a);  // the seed fixes the subset
  EXPECT_NE(SampleIndices(1000, 50, 8), a);
  std::vector<int64_t> first(a.begin(), a.end());
  std::sort(first.begin(), first.end());
  EXPECT_NE(first.back(), 49);  // a random subset, not the first images
  // More than there are: every index once.
  std::vector<int64_t> all = SampleIndices(5, 9, 0);
  std::sort(all.begin(), all.end());
  EXPECT_THAT(all, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_TRUE(SampleIndices(0, 3, 0).empty());
}

// The calibration images are training images, chosen by the seed and
// preprocessed exactly as the same image is for evaluation.
TEST_F(DatasetTest, SamplesTrainingImagesFromIdx) {
  const std::vector<uint8_t> data = Pixels(20 * 28 * 28, 3);
  Write("train-images-idx3-ubyte", Idx({20, 28, 28}, data));
  Write("train-labels-idx1-ubyte", Idx({20}, std::vector<uint8_t>(20, 1)));
  const preprocess::PreprocessConfig config = FashionConfig(32);
  auto sample = SampleTrainingImages(dir_.string(), config, 6, 11);
  ASSERT_TRUE(sample.ok()) << sample.status();
  EXPECT_THAT(sample->images.sizes().vec(), ElementsAre(6, 1, 32, 32));
  EXPECT_EQ(sample->description, "idx:" + dir_.string() + " train, 6 images, seed 11");
  auto raw = ReadIdx((dir_ / "train-images-idx3-ubyte").string());
  ASSERT_TRUE(raw.ok());
  auto every = PreprocessRaw(*raw, config);
  ASSERT_TRUE(every.ok());
  const std::vector<int64_t> idx = SampleIndices(20, 6, 11);
  for (size_t i = 0; i < idx.size(); ++i) {
    EXPECT_TRUE(torch::equal(sample->images[i], (*every)[idx[i]])) << i;
  }
  auto capped = SampleTrainingImages(dir_.string(), config, 100, 11);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->images.size(0), 20);
  EXPECT_EQ(SampleTrainingImages((dir_ / "nothing").string(), config, 6, 11).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DatasetTest, SamplesTrainingImagesFromAnImageFolderTrainDirectory) {
  preprocess::PreprocessConfig config;
  config.channels = 3;
  config.resize_shorter = 0;
  config.crop_size = 32;
  for (const std::string cls : {"a", "b"}) {
    fs::create_directories(dir_ / "root" / "train" / cls);
    for (int i = 0; i < 3; ++i) {
      cv::Mat img(24, 24, CV_8UC3, cv::Scalar(cls == "a" ? 10 : 200, 40 * i, 90));
      ASSERT_TRUE(cv::imwrite(
          (dir_ / "root" / "train" / cls / (std::to_string(i) + ".png")).string(), img));
    }
  }
  auto sample = SampleTrainingImages((dir_ / "root").string(), config, 4, 0);
  ASSERT_TRUE(sample.ok()) << sample.status();
  EXPECT_THAT(sample->images.sizes().vec(), ElementsAre(4, 3, 32, 32));
  EXPECT_THAT(sample->description, HasSubstr("imagefolder:"));
  auto every = LoadImageFolder((dir_ / "root" / "train").string(), config);
  ASSERT_TRUE(every.ok());
  const std::vector<int64_t> idx = SampleIndices(6, 4, 0);
  for (size_t i = 0; i < idx.size(); ++i) {
    EXPECT_TRUE(torch::equal(sample->images[i], every->images[idx[i]])) << i;
  }
}

}  // namespace
}  // namespace ghostserve::train
