#include "server/config/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "model/calibration.h"
#include "model/loaded_model.h"

namespace ghostserve::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kConfig[] = R"({
  "name": "my_ghostnet",
  "architecture": "ghostnet",
  "width": 0.5,
  "num_classes": 3,
  "input_channels": 1,
  "input_size": 48,
  "weights": "w.safetensors",
  "labels": ["cat", "dog", "T-shirt/top"],
  "preprocess": {"resize_shorter": 0, "crop_size": 48, "interpolation": "area",
                 "mean": [0.25], "std": [0.5]},
  "training": {"epochs": 3}
})";

absl::Status ParseError(const std::string& json) {
  return ParseModelConfig(json, "/cfg", "test.json").status();
}

TEST(ModelConfigTest, ParsesEveryField) {
  auto c = ParseModelConfig(kConfig, "/cfg", "test.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "my_ghostnet");
  EXPECT_DOUBLE_EQ(c->net.width, 0.5);
  EXPECT_EQ(c->net.num_classes, 3);
  EXPECT_EQ(c->net.in_channels, 1);
  EXPECT_EQ(c->net.input_size, 48);
  EXPECT_EQ(c->weights_path, "/cfg/w.safetensors");  // relative to the config's directory
  EXPECT_THAT(c->labels, ElementsAre("cat", "dog", "T-shirt/top"));
  EXPECT_EQ(c->preprocess.channels, 1);
  EXPECT_EQ(c->preprocess.resize_shorter, 0);
  EXPECT_EQ(c->preprocess.crop_size, 48);
  EXPECT_EQ(c->preprocess.interpolation, preprocess::Interpolation::kArea);
  EXPECT_THAT(c->preprocess.mean, ElementsAre(0.25f));
  EXPECT_THAT(c->preprocess.std, ElementsAre(0.5f));
  EXPECT_EQ(c->training_json, R"({"epochs":3})");
}

TEST(ModelConfigTest, DefaultsFollowTheChannels) {
  auto rgb = ParseModelConfig(R"({"name": "m", "num_classes": 5})", "", "t");
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->net.input_size, 224);
  EXPECT_EQ(rgb->preprocess.resize_shorter, 256);
  EXPECT_THAT(rgb->preprocess.mean, ElementsAre(0.485f, 0.456f, 0.406f));
  EXPECT_TRUE(rgb->weights_path.empty());
  auto gray = ParseModelConfig(R"({"name": "m", "num_classes": 5, "input_channels": 1})", "", "t");
  ASSERT_TRUE(gray.ok()) << gray.status();
  EXPECT_EQ(gray->preprocess.channels, 1);
  EXPECT_EQ(gray->preprocess.mean.size(), 1u);
  EXPECT_EQ(gray->preprocess.std.size(), 1u);
}

TEST(ModelConfigTest, RejectsBadConfigsNamingTheKey) {
  struct Case {
    std::string json;
    std::string expect;
  };
  const Case cases[] = {
      {"[1, 2]", "not a JSON object"},
      {"{not json", "not a JSON object"},
      {R"({"num_classes": 3})", "\"name\" is required"},
      {R"({"name": "m"})", "\"num_classes\" is required"},
      {R"({"name": "a b", "num_classes": 3})", "\"name\""},
      {R"({"name": "m", "num_classes": 3, "widht": 1.0})", "\"widht\" is not a known key"},
      {R"({"name": "m", "num_classes": 3, "architecture": "resnet"})", "\"architecture\""},
      {R"({"name": "m", "num_classes": 0})", "\"num_classes\""},
      {R"({"name": "m", "num_classes": 3, "input_channels": 4})", "\"input_channels\""},
      {R"({"name": "m", "num_classes": 2, "labels": ["a", "b", "c"]})", "3 names for 2 classes"},
      {R"({"name": "m", "num_classes": 2, "labels": "ab"})", "\"labels\""},
      {R"({"name": "m", "num_classes": 2, "input_size": 64})", "must equal preprocess.crop_size"},
      {R"({"name": "m", "num_classes": 2, "preprocess": {"crop": 64}})", "preprocess.crop"},
      {R"({"name": "m", "num_classes": 2, "preprocess": {"mean": [0.5]}})", "mean and std"},
      {R"({"name": "m", "num_classes": 2, "preprocess": {"std": [0, 1, 1]}})", "std"},
      {R"({"name": "m", "num_classes": 2, "preprocess": {"interpolation": "cubic"}})",
       "interpolation"},
      {R"({"name": "m", "num_classes": 2, "width": 0})", "width"},
      {R"({"name": "m", "num_classes": 2, "weights": ""})", "\"weights\""},
      {R"({"name": "m", "num_classes": 2, "precision": "fp16"})", "\"precision\""},
      {R"({"name": "m", "num_classes": 2, "precision": "int4"})", "\"precision\""},
      {R"({"name": "m", "num_classes": 2, "calibration": ""})", "\"calibration\""},
      {R"({"name": "m", "num_classes": 2, "calibration": 8})", "\"calibration\""},
      {R"({"name": "m", "num_classes": 2, "precision": 16})", "\"precision\""},
  };
  for (const Case& c : cases) {
    const absl::Status s = ParseError(c.json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(s.message(), HasSubstr(c.expect)) << c.json;
    EXPECT_THAT(s.message(), HasSubstr("test.json")) << c.json;
  }
}

TEST(ModelConfigTest, PrecisionIsCheckedKeptAndResolvedAtLoad) {
  auto fp32 = ParseModelConfig(R"({"name": "m", "num_classes": 5})", "", "t");
  ASSERT_TRUE(fp32.ok());
  EXPECT_EQ(fp32->precision, "fp32");
  EXPECT_EQ(LoadOptions(*fp32).inference.precision, model::Precision::kFp32);
  auto bf16 = ParseModelConfig(R"({"name": "m", "num_classes": 5, "precision": "bf16"})", "", "t");
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(LoadOptions(*bf16).inference.precision, model::Precision::kBf16);
  auto automatic =
      ParseModelConfig(R"({"name": "m", "num_classes": 5, "precision": "auto"})", "", "t");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(LoadOptions(*automatic).inference.precision, *model::ParsePrecision("auto"));
  auto int8 = ParseModelConfig(R"({"name": "m", "num_classes": 5, "precision": "int8"})", "", "t");
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ(int8->precision, "int8");
  EXPECT_EQ(LoadOptions(*int8).inference.precision, model::Precision::kInt8);
  // Written back as given, so a config moved to another CPU re-resolves.
  auto back = ParseModelConfig(ModelConfigToJson(*automatic, ""), "", "round-trip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->precision, "auto");
}

TEST(ModelConfigTest, CalibrationIsResolvedLikeTheWeights) {
  constexpr char kJson[] = R"({"name": "m", "num_classes": 5, "weights": "w.safetensors",
                               "calibration": "m.calibration"})";
  auto c = ParseModelConfig(kJson, "/cfg", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->calibration_path, "/cfg/m.calibration");  // relative to the config's directory
  EXPECT_TRUE(c->calibration_bytes.empty());
  const model::LoadModelOptions load = LoadOptions(*c);
  EXPECT_EQ(load.calibration_path, "/cfg/m.calibration");
  EXPECT_TRUE(load.calibration_bytes.empty());

  auto absolute = ParseModelConfig(
      R"({"name": "m", "num_classes": 5, "calibration": "/data/m.calibration"})", "/cfg", "t");
  ASSERT_TRUE(absolute.ok()) << absolute.status();
  EXPECT_EQ(absolute->calibration_path, "/data/m.calibration");
  auto none = ParseModelConfig(R"({"name": "m", "num_classes": 5})", "/cfg", "t");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->calibration_path.empty());
  EXPECT_TRUE(LoadOptions(*none).calibration_path.empty());

  // Written back by name, relative to where the config goes, beside the weights.
  const std::string text = ModelConfigToJson(*c, "w.safetensors", "m.calibration");
  EXPECT_THAT(text, HasSubstr(R"("calibration": "m.calibration")"));
  auto back = ParseModelConfig(text, "/elsewhere", "round-trip");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(back->calibration_path, "/elsewhere/m.calibration");
  EXPECT_EQ(back->weights_path, "/elsewhere/w.safetensors");
  // Without a name the key is left out.
  EXPECT_THAT(ModelConfigToJson(*c, "w.safetensors"), Not(HasSubstr("calibration")));
}

TEST(ModelConfigTest, JsonRoundTrip) {
  auto c = ParseModelConfig(kConfig, "/cfg", "test.json");
  ASSERT_TRUE(c.ok());
  const std::string text = ModelConfigToJson(*c, "w.safetensors");
  auto back = ParseModelConfig(text, "/elsewhere", "round-trip");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(back->name, c->name);
  EXPECT_EQ(back->net.num_classes, c->net.num_classes);
  EXPECT_EQ(back->net.in_channels, c->net.in_channels);
  EXPECT_EQ(back->net.input_size, c->net.input_size);
  EXPECT_DOUBLE_EQ(back->net.width, c->net.width);
  EXPECT_EQ(back->labels, c->labels);
  EXPECT_EQ(back->preprocess.mean, c->preprocess.mean);
  EXPECT_EQ(back->preprocess.std, c->preprocess.std);
  EXPECT_EQ(back->preprocess.interpolation, c->preprocess.interpolation);
  EXPECT_EQ(back->weights_path, "/elsewhere/w.safetensors");
  EXPECT_EQ(back->training_json, c->training_json);
}

TEST(ModelConfigTest, ReadsAFileOrEveryJsonOfADirectory) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("model_config_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "b.json") << R"({"name": "b", "num_classes": 2})";
  std::ofstream(dir / "a.json")
      << R"({"name": "a", "num_classes": 3, "weights": "a.pth", "calibration": "a.calibration"})";
  // A calibration is JSON too, but not a model config: its extension keeps
  // it out of a directory scan.
  std::ofstream(dir / "a.calibration") << R"({"format": "ghostserve-int8-calibration"})";
  std::ofstream(dir / "notes.txt") << "not a config";
  auto all = ReadModelConfigs(dir.string());
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "a");
  EXPECT_EQ((*all)[0].weights_path, (dir / "a.pth").string());
  EXPECT_EQ((*all)[0].calibration_path, (dir / "a.calibration").string());
  EXPECT_EQ((*all)[1].name, "b");
  auto one = ReadModelConfigs((dir / "b.json").string());
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  EXPECT_EQ(ReadModelConfigs((dir / "missing.json").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream(dir / "c.json") << R"({"name": "c"})";
  EXPECT_THAT(ReadModelConfigs(dir.string()).status().message(), HasSubstr("c.json"));
  fs::remove_all(dir);
}

TEST(ModelConfigTest, TheFashionModelIsBuiltIn) {
  const auto& builtin = BuiltinModelConfigs();
  ASSERT_EQ(builtin.size(), 1u);
  const ModelConfig& m = builtin[0];
  EXPECT_EQ(m.name, "ghostnet_050_fashion");
  EXPECT_DOUBLE_EQ(m.net.width, 0.5);
  EXPECT_EQ(m.net.in_channels, 1);
  EXPECT_THAT(m.labels, ElementsAre("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                    "Shirt", "Sneaker", "Bag", "Ankle boot"));
  EXPECT_EQ(m.preprocess.resize_shorter, 0);  // no ImageNet-style crop
  EXPECT_TRUE(m.weights_path.empty());
  EXPECT_GT(m.weights_bytes.size(), 1000000u);

  auto loaded = model::LoadModel(LoadOptions(m));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->trained);
  EXPECT_EQ((*loaded)->weights_source, "builtin:ghostnet_050_fashion.safetensors");

  // Its calibration, when models/ghostnet_050_fashion.json names one, is
  // compiled in too (never a path, which would resolve against the working
  // directory), and fits the compiled-in weights.
  EXPECT_TRUE(m.calibration_path.empty());
  const model::LoadModelOptions load = LoadOptions(m);
  EXPECT_EQ(load.calibration_bytes.data(), m.calibration_bytes.data());
  EXPECT_EQ(load.calibration_bytes.size(), m.calibration_bytes.size());
  if (!m.calibration_bytes.empty()) {
    auto calibration = model::ParseCalibration(m.calibration_bytes, "builtin");
    ASSERT_TRUE(calibration.ok()) << calibration.status();
    EXPECT_FALSE(calibration->ranges.empty());
    EXPECT_EQ(calibration->fingerprint, (*loaded)->inference->WeightsFingerprint());
  }
}

}  // namespace
}  // namespace ghostserve::config

namespace ghostserve::config {
namespace {

TEST(ModelConfigTest, VersionPolicyInTritonsForm) {
  auto policy = [](const std::string& p) {
    return ParseModelConfig(R"({"name": "m", "num_classes": 2, "version_policy": )" + p + "}", "",
                            "t");
  };
  auto latest = policy(R"({"latest": {"num_versions": 3}})");
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->version_policy.kind, "latest");
  EXPECT_EQ(latest->version_policy.num_versions, 3);
  auto all = policy(R"({"all": {}})");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->version_policy.kind, "all");
  auto specific = policy(R"({"specific": {"versions": [1, 3]}})");
  ASSERT_TRUE(specific.ok()) << specific.status();
  EXPECT_EQ(specific->version_policy.kind, "specific");
  EXPECT_THAT(specific->version_policy.versions, ElementsAre(1, 3));
  // Without one: the latest version.
  auto none = ParseModelConfig(R"({"name": "m", "num_classes": 2})", "", "t");
  EXPECT_EQ(none->version_policy.kind, "latest");
  EXPECT_EQ(none->version_policy.num_versions, 1);
  for (const char* bad : {R"({"newest": {}})", R"({"latest": {"num_versions": 0}})",
                          R"({"specific": {"versions": []}})", R"({"specific": {"versions": [0]}})",
                          R"({"all": {}, "latest": {}})", R"("all")"}) {
    auto s = policy(bad);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.status().message(), HasSubstr("version_policy")) << bad;
  }
}

TEST(ModelConfigTest, ImageNetLabelsByName) {
  auto c = ParseModelConfig(R"({"name": "m", "num_classes": 1000, "labels": "imagenet"})", "", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->imagenet_labels);
  EXPECT_TRUE(c->labels.empty());
  auto wrong =
      ParseModelConfig(R"({"name": "m", "num_classes": 10, "labels": "imagenet"})", "", "t");
  EXPECT_THAT(wrong.status().message(), HasSubstr("needs num_classes 1000"));
}

}  // namespace
}  // namespace ghostserve::config
