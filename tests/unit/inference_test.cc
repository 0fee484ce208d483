#include "model/inference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

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
  bool planned;
  bool channels_last;  // ATen path: activations; planned path: the input
  bool force_onednn;   // ATen path only
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
  io.planned = GetParam().planned;
  io.channels_last = GetParam().channels_last;
  io.force_onednn = GetParam().force_onednn;
  auto compiled = InferenceGhostNet::Create(*net, io);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  for (auto shape : {std::vector<int64_t>{1, 3, 224, 224}, std::vector<int64_t>{3, 3, 160, 96},
                     std::vector<int64_t>{2, 3, 33, 47}}) {
    torch::Tensor x = torch::randn(shape);
    if (GetParam().planned && GetParam().channels_last) {
      x = x.contiguous(at::MemoryFormat::ChannelsLast);
    }
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
                         ::testing::Values(Case{1.0, true, false, true}, Case{0.5, true, true, true},
                                           Case{1.3, true, true, true}, Case{0.75, true, false, true},
                                           Case{1.0, false, true, true},
                                           Case{1.0, false, false, false},
                                           Case{0.5, false, true, false},
                                           Case{1.3, false, false, true}),
                         [](const auto& info) {
                           const Case& c = info.param;
                           std::string name = "w" + std::to_string(static_cast<int>(c.width * 100));
                           if (c.planned) return name + "_planned" + (c.channels_last ? "_nhwc_input" : "_nchw_input");
                           return name + (c.channels_last ? "_nhwc" : "_nchw") +
                                  (c.force_onednn ? "_onednn" : "_aten");
                         });

// The planned engine builds one plan per input shape and keeps at most 64;
// shapes beyond that evict the least recently used and still give the right
// answer, and inputs in either layout, in neither, or in double are read
// correctly. The reference is the trainable module run in double. On these
// small, odd-sized inputs a random GhostNet's activations reach 1e5-1e6 and
// every float engine strays from it by up to ~1% relative (the float module
// itself by up to 0.8%), so the bound is relative to the float engines' own
// error: no worse than 3x the larger of the float module's and the ATen
// engine's, or 1e-4. A wrong layout or fused op is off by 10-100%.
TEST(InferenceGhostNetTest, PlannedEngineAcrossManyShapesAndLayouts) {
  ConfigureThreads(0);
  GhostNetOptions o;
  o.width = 0.5;
  auto make = [&] {
    GhostNet net(o);
    InitializeDeterministic(net, 11);
    RandomizeBatchNorm(net, 12);
    net->eval();
    return net;
  };
  GhostNet net = make();
  GhostNet exact_net = make();
  exact_net->to(torch::kDouble);
  InferenceOptions aten_options;
  aten_options.planned = false;
  // Per-step thread tuning would time every step of the 47 small-batch plans;
  // it is exercised by the other tests here.
  InferenceOptions planned_options;
  planned_options.tune_threads = false;
  auto planned = *InferenceGhostNet::Create(*net, planned_options);
  auto aten = *InferenceGhostNet::Create(*net, aten_options);
  auto check = [&](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    const torch::Tensor exact = exact_net->forward(x.to(torch::kDouble)).to(torch::kFloat);
    const double float_error = std::max(RelativeError(net->forward(x.to(torch::kFloat)), exact),
                                        RelativeError(*aten->Forward(x), exact));
    EXPECT_LT(RelativeError(*planned->Forward(x), exact), std::max(1e-4, 3 * float_error))
        << "shape " << x.sizes();
  };
  torch::manual_seed(3);
  for (int i = 0; i < 70; ++i) {
    torch::Tensor x = torch::randn({1 + i % 3, 3, 32 + i, 32 + (i * 7) % 19});
    if (i % 5 == 0) x = x.transpose(2, 3).contiguous().transpose(2, 3);  // neither layout
    if (i % 5 == 1) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    if (i % 5 == 2) x = x.to(torch::kDouble);
    check(x);
  }
  // The first shapes were evicted; asking again rebuilds them.
  check(torch::randn({1, 3, 32, 32}));
}

// Several threads at once, each with its own batch size and OpenMP team size
// (1 or 2, as the server's executors have): each call takes its own
// workspace, so no two calls share activations, and a plan made for one team
// size is never run by a thread with another (oneDNN fixes a primitive's
// thread count when it is made).
TEST(InferenceGhostNetTest, PlannedEngineConcurrentCallsWithDifferentBatchSizes) {
  GhostNetOptions o;
  o.width = 0.5;
  GhostNet net(o);
  InitializeDeterministic(net, 13);
  net->eval();
  auto compiled = *InferenceGhostNet::Create(*net);
  std::vector<torch::Tensor> inputs, want;
  for (int n = 1; n <= 4; ++n) {
    inputs.push_back(torch::randn({n, 3, 64, 64}));
    want.push_back(*compiled->Forward(inputs.back()));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      ConfigureInferenceThread(1 + t % 2);
      for (int round = 0; round < 20; ++round) {
        const int k = (t + round) % 4;
        if (!torch::allclose(*compiled->Forward(inputs[k]), want[k], 1e-5, 1e-6)) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

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
