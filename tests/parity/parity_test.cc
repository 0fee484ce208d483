// Parity between ghostserve's C++ GhostNet and an independent PyTorch
// GhostNet (tests/reference/ghostnet_ref.py). The fixtures, written by
// make_parity_data.py, hold checkpoints in the published torch.save format and
// as safetensors, input batches, and the reference logits. The C++ side loads
// them through the production path (LoadModel) with every inference
// optimisation on: BN folding, channels-last, oneDNN.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "model/loaded_model.h"
#include "model/state_dict.h"
#include "model/threading.h"

namespace ghostserve::model {
namespace {

std::string FixtureDir() {
  const char* dir = std::getenv("GHOSTSERVE_PARITY_DIR");
  return dir == nullptr ? "" : dir;
}

std::map<std::string, torch::Tensor> ReadFixtures(const std::string& path) {
  auto sd = ReadTorchCheckpoint(path);
  EXPECT_TRUE(sd.ok()) << sd.status();
  std::map<std::string, torch::Tensor> out;
  if (sd.ok()) {
    for (auto& [k, v] : *sd) out[k] = v;
  }
  return out;
}

class ParityTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(ParityTest, LogitsMatchReference) {
  ASSERT_FALSE(FixtureDir().empty()) << "GHOSTSERVE_PARITY_DIR is not set";
  ConfigureThreads(0);
  const auto& [name, ext] = GetParam();
  LoadModelOptions o;
  o.name = name;
  o.net = *BuiltinModelOptions(name);
  o.weights_path = FixtureDir() + "/" + name + ext;
  InferenceOptions all_on;
  all_on.channels_last = true;
  all_on.force_onednn = true;
  o.inference = all_on;
  auto model = LoadModel(o);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->trained);
  auto io = ReadFixtures(FixtureDir() + "/" + name + ".io.pth");
  for (const std::string suffix : {"224", "odd"}) {
    const torch::Tensor& x = io["input_" + suffix];
    const torch::Tensor& want = io["logits_" + suffix];
    ASSERT_TRUE(x.defined() && want.defined());
    auto result = (*model)->inference->Forward(x);
    ASSERT_TRUE(result.ok()) << result.status();
    torch::Tensor got = *result;
    ASSERT_EQ(got.sizes(), want.sizes());
    const double rel = (got - want).abs().max().item<double>() / want.abs().max().item<double>();
    EXPECT_LT(rel, 1e-4) << name << ext << " input " << suffix;
    EXPECT_TRUE(torch::equal(got.argmax(1), want.argmax(1)));
    std::printf("%s%s input_%s: max relative error %.3g\n", name.c_str(), ext.c_str(),
                suffix.c_str(), rel);
  }
}

// A training checkpoint: weights wrapped in {"state_dict": ...} beside an
// epoch counter and SGD state, keys prefixed "module." (DataParallel).
TEST(ParityCheckpointTest, TrainingCheckpointLoadsAndMatches) {
  ASSERT_FALSE(FixtureDir().empty()) << "GHOSTSERVE_PARITY_DIR is not set";
  LoadModelOptions o;
  o.name = "ghostnet_050";
  o.net = *BuiltinModelOptions("ghostnet_050");
  o.weights_path = FixtureDir() + "/ghostnet_050.train_checkpoint.pth";
  auto model = LoadModel(o);
  ASSERT_TRUE(model.ok()) << model.status();
  auto io = ReadFixtures(FixtureDir() + "/ghostnet_050.io.pth");
  auto got = (*model)->inference->Forward(io["input_224"]);
  ASSERT_TRUE(got.ok()) << got.status();
  const torch::Tensor& want = io["logits_224"];
  EXPECT_LT((*got - want).abs().max().item<double>() / want.abs().max().item<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(AllWidths, ParityTest,
                         ::testing::Combine(::testing::Values("ghostnet_050", "ghostnet_100",
                                                              "ghostnet_130"),
                                            ::testing::Values(".pth", ".safetensors")),
                         [](const auto& info) {
                           std::string ext =
                               std::get<1>(info.param) == ".pth" ? "pth" : "safetensors";
                           return std::get<0>(info.param) + "_" + ext;
                         });

}  // namespace
}  // namespace ghostserve::model
