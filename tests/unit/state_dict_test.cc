#include "model/state_dict.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "model/ghostnet.h"

namespace ghostserve::model {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

GhostNetOptions Small() {
  GhostNetOptions o;
  o.width = 0.5;
  o.num_classes = 10;
  return o;
}

TEST(SafetensorsTest, RoundTripsEveryTensor) {
  GhostNet a(Small());
  InitializeDeterministic(a, 1);
  const std::string path = TempPath("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, ModuleStateDict(*a), {{"name", "x"}}).ok());
  auto read = ReadWeightsFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  GhostNet b(Small());
  InitializeDeterministic(b, 2);
  ASSERT_TRUE(LoadStateDict(*b, *read).ok());
  for (const auto& [name, t] : ModuleStateDict(*a)) {
    bool found = false;
    for (const auto& [name_b, tb] : ModuleStateDict(*b)) {
      if (name_b == name) {
        EXPECT_TRUE(torch::equal(t, tb)) << name;
        found = true;
      }
    }
    EXPECT_TRUE(found) << name;
  }
}

TEST(LoadStateDictTest, MissingTensorIsNamed) {
  GhostNet net(Small());
  StateDict sd = ModuleStateDict(*net);
  sd.erase(sd.begin() + 5);
  const std::string removed = ModuleStateDict(*net)[5].first;
  absl::Status s = LoadStateDict(*net, sd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("missing tensor '" + removed + "'"), std::string::npos) << s;
}

TEST(LoadStateDictTest, ExtraTensorIsNamed) {
  GhostNet net(Small());
  StateDict sd = ModuleStateDict(*net);
  sd.emplace_back("blocks.99.weight", torch::zeros({1}));
  absl::Status s = LoadStateDict(*net, sd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unexpected tensor 'blocks.99.weight'"), std::string::npos) << s;
}

TEST(LoadStateDictTest, MisShapedTensorIsNamedAndModelUntouched) {
  GhostNet net(Small());
  InitializeDeterministic(net, 3);
  torch::Tensor before = net->conv_stem->weight.clone();
  StateDict sd = ModuleStateDict(*net);
  for (auto& [name, t] : sd) {
    t = torch::ones_like(t);
    if (name == "classifier.weight") t = torch::zeros({1000, 1280});
  }
  absl::Status s = LoadStateDict(*net, sd);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'classifier.weight' has shape [1000, 1280]"), std::string::npos) << s;
  EXPECT_TRUE(torch::equal(before, net->conv_stem->weight));
}

TEST(ReadWeightsFileTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadWeightsFile("/nonexistent/w.pth").status().code(), absl::StatusCode::kNotFound);
}

TEST(ReadWeightsFileTest, UnknownFormatIsInvalid) {
  const std::string path = TempPath("junk.bin");
  WriteBytes(path, "GIF89a not weights at all");
  EXPECT_EQ(ReadWeightsFile(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReadWeightsFileTest, CorruptZipIsInvalidNotACrash) {
  const std::string path = TempPath("bad.pth");
  WriteBytes(path, std::string("PK\x03\x04", 4) + std::string(100, '\x7f'));
  EXPECT_EQ(ReadWeightsFile(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReadWeightsFileTest, SafetensorsWithOffsetsOutsideFileIsInvalid) {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}})";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  const std::string path = TempPath("short.safetensors");
  WriteBytes(path, bytes + header + std::string(16, '\0'));
  auto r = ReadWeightsFile(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'w'"), std::string::npos) << r.status();
}

TEST(ReadWeightsFileTest, SafetensorsHugeHeaderLengthIsInvalid) {
  std::string bytes(8, '\0');
  const uint64_t n = uint64_t{1} << 62;
  std::memcpy(bytes.data(), &n, 8);
  const std::string path = TempPath("huge.safetensors");
  WriteBytes(path, bytes + "{}");
  EXPECT_EQ(ReadSafetensors(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReadWeightsFileTest, SafetensorsShapeBytesMismatchIsInvalid) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  const std::string path = TempPath("mismatch.safetensors");
  WriteBytes(path, bytes + header + std::string(8, '\0'));
  EXPECT_EQ(ReadSafetensors(path).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ghostserve::model
