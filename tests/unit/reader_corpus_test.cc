// Replays the weight-file reader fuzzers' seed corpora (tests/fuzz/pickle,
// tests/fuzz/safetensors: corpus/ and regressions/) through the Torch-free
// readers in the regular build, so `make test` keeps them fixed without clang
// or libFuzzer; plus one test per hostile input the split's review found.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/pickle_reader.h"
#include "model/safetensors.h"
#include "tests/fuzz/reader_input.h"

namespace ghostserve::model {
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
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Seeds without a _trunc / _flip suffix are valid files written by
// make_reader_corpus.py with torch.
bool IsValidSeed(const fs::path& f) {
  const std::string n = f.filename().string();
  return n.find("_trunc") == std::string::npos && n.find("_flip") == std::string::npos;
}

absl::StatusOr<PickledStateDict> ReadPickleInput(const std::string& bytes) {
  const auto input = fuzz::SplitPickleInput(bytes);
  return ReadPickledStateDict(input.pkl, fuzz::LoaderFor(input));
}

absl::StatusOr<SafetensorsIndex> ReadSafetensorsInput(const std::string& bytes) {
  MemoryStreamBuf buf(bytes);
  std::istream in(&buf);
  return ParseSafetensorsHeader(in, bytes.size(), "seed");
}

TEST(ReaderCorpusTest, PickleSeedsAndRegressionsAreReadOrRefused) {
  int valid = 0;
  for (const std::string dir : {"pickle/corpus", "pickle/regressions"}) {
    for (const auto& f : FilesIn(dir)) {
      SCOPED_TRACE(f.string());
      auto sd = ReadPickleInput(ReadFile(f));
      if (dir == "pickle/corpus" && IsValidSeed(f)) {
        ASSERT_TRUE(sd.ok()) << sd.status();
        EXPECT_FALSE(sd->entries.empty());
        ++valid;
      }
      if (!sd.ok()) {
        EXPECT_EQ(sd.status().code(), absl::StatusCode::kInvalidArgument);
        continue;
      }
      for (const auto& t : sd->tensors) fuzz::TouchView(t);
      for (const auto& [name, index] : sd->entries) EXPECT_LT(index, sd->tensors.size());
    }
  }
  EXPECT_GE(valid, 5);
}

TEST(ReaderCorpusTest, SafetensorsSeedsAndRegressionsAreReadOrRefused) {
  int valid = 0;
  for (const std::string dir : {"safetensors/corpus", "safetensors/regressions"}) {
    for (const auto& f : FilesIn(dir)) {
      SCOPED_TRACE(f.string());
      const std::string bytes = ReadFile(f);
      auto index = ReadSafetensorsInput(bytes);
      if (dir == "safetensors/corpus" && IsValidSeed(f)) {
        ASSERT_TRUE(index.ok()) << index.status();
        ++valid;
      }
      if (!index.ok()) {
        EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
        continue;
      }
      uint64_t total = 0;
      for (const auto& e : index->entries) total += e.end - e.begin;
      EXPECT_LE(total, bytes.size());
    }
  }
  EXPECT_GE(valid, 3);
}

TEST(ReaderCorpusTest, PickleViewsKeepTheirShapeStridesAndOffset) {
  auto sd = ReadPickleInput(ReadFile(fs::path(GHOSTSERVE_FUZZ_DIR) / "pickle/corpus/views"));
  ASSERT_TRUE(sd.ok()) << sd.status();
  ASSERT_EQ(sd->entries.size(), 4u);
  EXPECT_EQ(sd->entries[0].first, "t");
  const PickledTensor& t = sd->tensors[sd->entries[0].second];
  EXPECT_EQ(t.shape, (std::vector<int64_t>{4, 3}));  // base.t() of a 3x4
  EXPECT_EQ(t.strides, (std::vector<int64_t>{1, 4}));
  const PickledTensor& col = sd->tensors[sd->entries[2].second];
  EXPECT_EQ(col.offset, 2);
  EXPECT_EQ(col.strides, (std::vector<int64_t>{4}));
}

// A pickle of {"w": _rebuild_tensor_v2(storage "0" of floats, 0, size, stride)}.
std::string TensorPickle(const std::string& size_tuple, const std::string& stride_tuple) {
  using namespace std::string_literals;
  std::string p = "\x80\x02}X\x01\x00\x00\x00w"s;
  p += "ctorch._utils\n_rebuild_tensor_v2\n("s;
  p += "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00"s + "0";
  p += "X\x03\x00\x00\x00"s + "cpuK\x01tQK\x00"s;
  p += size_tuple + stride_tuple + "tRs.";
  return p;
}

std::string WithRecord(const std::string& pkl, const std::string& name, size_t bytes) {
  std::string out;
  auto u32 = [&out](uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  u32(static_cast<uint32_t>(pkl.size()));
  out += pkl;
  u32(static_cast<uint32_t>(name.size()));
  out += name;
  u32(static_cast<uint32_t>(bytes));
  out += std::string(bytes, '\0');
  return out;
}

TEST(ReaderCorpusTest, PickleReadsAOneElementTensor) {
  auto sd = ReadPickleInput(
      WithRecord(TensorPickle(std::string("(K\x01t", 4), std::string("(K\x01t", 4)), "data/0", 4));
  ASSERT_TRUE(sd.ok()) << sd.status();
  ASSERT_EQ(sd->entries.size(), 1u);
  EXPECT_EQ(sd->tensors[0].shape, std::vector<int64_t>{1});
}

// Zero strides let one stored float describe 2^40 of them; materializing
// that would have asked LibTorch for 4 TB.
TEST(ReaderCorpusTest, PickleRefusesAZeroStrideViewLargerThanItsStorage) {
  const std::string size("(J\x00\x00\x10\x00J\x00\x00\x10\x00t", 12);
  const std::string stride("(K\x00K\x00t", 6);
  auto sd = ReadPickleInput(WithRecord(TensorPickle(size, stride), "data/0", 4));
  ASSERT_FALSE(sd.ok());
  EXPECT_EQ(sd.status().message(), "data.pkl: tensor view is larger than its storage");
}

// A dict holding itself under "state_dict" recursed until the stack ran out.
TEST(ReaderCorpusTest, PickleRefusesADictNestedInItself) {
  const std::string pkl("\x80\x02}q\x00X\x0a\x00\x00\x00state_dicth\x00s.", 24);
  auto sd = ReadPickleInput(WithRecord(pkl, "none", 0));
  ASSERT_FALSE(sd.ok());
  EXPECT_EQ(sd.status().message(), "checkpoint nests state dicts too deeply");
}

// Overlapping byte ranges let a small file describe many copies of its data.
TEST(ReaderCorpusTest, SafetensorsRefusesOverlappingRanges) {
  std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                       R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  const uint64_t len = header.size();
  std::string file(reinterpret_cast<const char*>(&len), 8);
  file += header + "abcd";
  auto index = ReadSafetensorsInput(file);
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().message(), "seed: tensor 'b': data_offsets overlap another tensor");
}

}  // namespace
}  // namespace ghostserve::model
