#include "model/ghostnet.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "model/loaded_model.h"
#include "model/state_dict.h"

namespace ghostserve::model {
namespace {

TEST(MakeDivisibleTest, MatchesReleasedCode) {
  // Values computed with the released Python _make_divisible(v, 4).
  EXPECT_EQ(MakeDivisible(16 * 0.5, 4), 8);
  EXPECT_EQ(MakeDivisible(16 * 1.3, 4), 20);
  EXPECT_EQ(MakeDivisible(72 * 1.3, 4), 92);
  EXPECT_EQ(MakeDivisible(184 * 0.5, 4), 92);
  EXPECT_EQ(MakeDivisible(1.0, 4), 4);          // never below the divisor
  EXPECT_EQ(MakeDivisible(120 * 0.25, 4), 32);  // 30 rounds up to 32
}

struct WidthCase {
  const char* name;
  double width;
  int64_t paper_parameters;
  double paper_macs;
};

class GhostNetWidthTest : public ::testing::TestWithParam<WidthCase> {};

TEST_P(GhostNetWidthTest, ParameterCountMatchesPublishedModel) {
  GhostNetOptions o;
  o.width = GetParam().width;
  GhostNet net(o);
  const double params = static_cast<double>(net->CountParameters());
  EXPECT_NEAR(params / GetParam().paper_parameters, 1.0, 0.005)
      << GetParam().name << " has " << params << " parameters";
}

TEST_P(GhostNetWidthTest, MacCountMatchesPaper) {
  GhostNetOptions o;
  o.width = GetParam().width;
  GhostNet net(o);
  const double macs = static_cast<double>(net->CountMacs());
  EXPECT_NEAR(macs / GetParam().paper_macs, 1.0, 0.03)
      << GetParam().name << " has " << macs << " MACs";
}

TEST_P(GhostNetWidthTest, ForwardGivesLogitsPerImage) {
  GhostNetOptions o;
  o.width = GetParam().width;
  GhostNet net(o);
  net->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor y = net->forward(torch::randn({2, 3, 224, 224}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 1000}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(PublishedWidths, GhostNetWidthTest,
                         ::testing::Values(WidthCase{"ghostnet_050", 0.5, 2587292, 42e6},
                                           WidthCase{"ghostnet_100", 1.0, 5182508, 141e6},
                                           WidthCase{"ghostnet_130", 1.3, 7358820, 226e6}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(GhostNetTest, StateDictNamesMatchReleasedCheckpoint) {
  GhostNet net(GhostNetOptions{});
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : ModuleStateDict(*net)) shapes[name] = t.sizes().vec();
  // A sample of keys and shapes from the published ghostnet_1x checkpoint.
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"conv_stem.weight", {16, 3, 3, 3}},
      {"bn1.running_var", {16}},
      {"bn1.num_batches_tracked", {}},
      {"blocks.0.0.ghost1.primary_conv.0.weight", {8, 16, 1, 1}},
      {"blocks.0.0.ghost1.cheap_operation.0.weight", {8, 1, 3, 3}},
      {"blocks.0.0.ghost1.cheap_operation.1.running_mean", {8}},
      {"blocks.1.0.conv_dw.weight", {48, 1, 3, 3}},
      {"blocks.1.0.bn_dw.bias", {48}},
      {"blocks.1.0.shortcut.0.weight", {16, 1, 3, 3}},
      {"blocks.1.0.shortcut.2.weight", {24, 16, 1, 1}},
      {"blocks.1.0.shortcut.3.running_var", {24}},
      {"blocks.3.0.se.conv_reduce.weight", {20, 72, 1, 1}},
      {"blocks.3.0.se.conv_reduce.bias", {20}},
      {"blocks.3.0.se.conv_expand.weight", {72, 20, 1, 1}},
      {"blocks.6.3.ghost2.primary_conv.0.weight", {56, 480, 1, 1}},
      {"blocks.8.3.se.conv_reduce.weight", {240, 960, 1, 1}},
      {"blocks.9.0.conv.weight", {960, 160, 1, 1}},
      {"blocks.9.0.bn1.weight", {960}},
      {"conv_head.weight", {1280, 960, 1, 1}},
      {"conv_head.bias", {1280}},
      {"classifier.weight", {1000, 1280}},
      {"classifier.bias", {1000}},
  };
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(shapes.count(name)) << "missing " << name;
    EXPECT_EQ(shapes[name], shape) << name;
  }
  // No stray modules: the stride-1 blocks with equal channels have no
  // shortcut convolution and no depthwise stage.
  EXPECT_EQ(shapes.count("blocks.0.0.shortcut.0.weight"), 0u);
  EXPECT_EQ(shapes.count("blocks.0.0.conv_dw.weight"), 0u);
  EXPECT_EQ(shapes.count("blocks.6.0.se.conv_reduce.weight"), 0u);
  EXPECT_EQ(shapes.size(), 512u);  // len(ghostnet_1x state_dict())
}

TEST(GhostNetTest, CustomClassesChannelsAndSize) {
  GhostNetOptions o;
  o.width = 0.5;
  o.num_classes = 10;
  o.in_channels = 1;
  o.input_size = 64;
  ASSERT_TRUE(o.Validate().ok());
  GhostNet net(o);
  net->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor y = net->forward(torch::randn({3, 1, 64, 64}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(net->conv_stem->weight.size(1), 1);
  // Spatial MACs scale with the input area (12x from 64 to 224); the head
  // and squeeze-excite MACs do not.
  GhostNetOptions big = o;
  big.input_size = 224;
  EXPECT_GT(GhostNet(big)->CountMacs(), 8 * net->CountMacs());
}

TEST(GhostNetTest, ValidateRejectsBadOptions) {
  GhostNetOptions o;
  o.width = 0.0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = GhostNetOptions{};
  o.num_classes = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = GhostNetOptions{};
  o.input_size = 16;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = GhostNetOptions{};
  o.in_channels = 5;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GhostNetTest, SeededInitialisationIsDeterministic) {
  GhostNet a(GhostNetOptions{}), b(GhostNetOptions{}), c(GhostNetOptions{});
  InitializeDeterministic(a, 42);
  InitializeDeterministic(b, 42);
  InitializeDeterministic(c, 43);
  EXPECT_TRUE(torch::equal(a->conv_stem->weight, b->conv_stem->weight));
  EXPECT_TRUE(torch::equal(a->classifier->weight, b->classifier->weight));
  EXPECT_FALSE(torch::equal(a->conv_stem->weight, c->conv_stem->weight));
}

TEST(LoadedModelTest, UntrainedModelSaysSo) {
  LoadModelOptions o;
  o.name = "ghostnet_050";
  o.net = *BuiltinModelOptions("ghostnet_050");
  auto m = LoadModel(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE((*m)->trained);
  EXPECT_EQ((*m)->weights_source, "untrained:seed=0");
  EXPECT_EQ((*m)->parameters, 2587292);
}

TEST(LoadedModelTest, UnknownBuiltinNameIsNotFound) {
  EXPECT_EQ(BuiltinModelOptions("ghostnet_200").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ghostserve::model
