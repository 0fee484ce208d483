#include "model/inference.h"

#include <gtest/gtest.h>

#include "model/ghostnet.h"
#include "model/threading.h"

namespace ghostserve::model {
namespace {

// BatchNorm with non-trivial statistics, so folding is really exercised.
void RandomizeBatchNorm(GhostNet& net, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (const auto& m : net->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      const int64_t n = bn->weight.size(0);
      bn->weight.copy_(1.0 + 0.2 * torch::randn({n}));
      bn->bias.copy_(0.1 * torch::randn({n}));
      bn->running_mean.copy_(0.1 * torch::randn({n}));
      bn->running_var.copy_(0.5 + torch::rand({n}));
    }
  }
}

double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

struct Case {
  double width;
  bool channels_last;
  bool force_onednn;
};

class InferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(InferenceTest, MatchesTrainableModuleInEvalMode) {
  ConfigureThreads(0);
  GhostNetOptions o;
  o.width = GetParam().width;
  GhostNet net(o);
  InitializeDeterministic(net, 5);
  RandomizeBatchNorm(net, 6);
  net->eval();
  InferenceOptions io;
  io.channels_last = GetParam().channels_last;
  io.force_onednn = GetParam().force_onednn;
  auto compiled = InferenceGhostNet::Create(*net, io);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  for (auto shape : {std::vector<int64_t>{1, 3, 224, 224}, std::vector<int64_t>{3, 3, 160, 96}}) {
    torch::Tensor x = torch::randn(shape);
    torch::Tensor want;
    {
      torch::NoGradGuard no_grad;
      want = net->forward(x);
    }
    torch::Tensor got = *(*compiled)->Forward(x);
    EXPECT_LT(RelativeError(got, want), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, InferenceTest,
                         ::testing::Values(Case{1.0, true, true}, Case{1.0, false, false},
                                           Case{0.5, true, false}, Case{1.3, false, true}),
                         [](const auto& info) {
                           const Case& c = info.param;
                           return "w" + std::to_string(static_cast<int>(c.width * 100)) +
                                  (c.channels_last ? "_nhwc" : "_nchw") +
                                  (c.force_onednn ? "_onednn" : "_aten");
                         });

TEST(InferenceGhostNetTest, ConcurrentForwardsAgree) {
  GhostNetOptions o;
  o.width = 0.5;
  GhostNet net(o);
  InitializeDeterministic(net, 9);
  net->eval();
  auto compiled = *InferenceGhostNet::Create(*net);
  torch::Tensor x = torch::randn({2, 3, 128, 128});
  torch::Tensor want = *compiled->Forward(x);
  std::vector<torch::Tensor> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { got[i] = *compiled->Forward(x); });
  }
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_TRUE(torch::allclose(g, want, 1e-5, 1e-6));
}

TEST(InferenceGhostNetTest, GrayscaleModelWithTenClasses) {
  GhostNetOptions o;
  o.width = 0.5;
  o.in_channels = 1;
  o.num_classes = 10;
  GhostNet net(o);
  InitializeDeterministic(net, 2);
  net->eval();
  auto compiled = *InferenceGhostNet::Create(*net);
  torch::Tensor y = *compiled->Forward(torch::rand({4, 1, 64, 64}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{4, 10}));
  EXPECT_GT(compiled->WeightBytes(), 0);
}

}  // namespace
}  // namespace ghostserve::model
