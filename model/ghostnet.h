// GhostNet v1 (Han et al., CVPR 2020) in the LibTorch C++ frontend, built the
// way the paper's released PyTorch code builds it, with the same module tree,
// so parameter names and shapes equal those of the published checkpoint
// (conv_stem.weight, blocks.S.B.ghost1.primary_conv.0.weight, ...).
//
// This module is the trainable form of the network. Serving uses
// InferenceGhostNet (inference.h), which is compiled from it with BatchNorm
// folded away.
#ifndef GHOSTSERVE_MODEL_GHOSTNET_H_
#define GHOSTSERVE_MODEL_GHOSTNET_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ghostserve::model {

struct GhostNetOptions {
  // Width multiplier applied to every channel count (0.5, 1.0, 1.3 published).
  double width = 1.0;
  // Size of the classifier output.
  int64_t num_classes = 1000;
  // Channels of the input image (3 for RGB, 1 for grayscale models).
  int64_t in_channels = 3;
  // Square input side in pixels that MAC counts and warm-up use. The network
  // itself accepts any size >= 32 because it ends in global average pooling.
  int64_t input_size = 224;
  // Dropout before the classifier; active in training mode only.
  double dropout = 0.2;

  // Returns InvalidArgument naming the first field out of range.
  absl::Status Validate() const;
};

// One row of the architecture table: a Ghost bottleneck.
struct BottleneckSpec {
  int64_t kernel;     // depthwise kernel size (3 or 5)
  int64_t expansion;  // hidden channels before width scaling
  int64_t out;        // output channels before width scaling
  double se_ratio;    // 0 = no squeeze-excite
  int64_t stride;     // 1 or 2
};

// The 16 bottlenecks of GhostNet v1 grouped in 9 stages, as in the paper.
const std::vector<std::vector<BottleneckSpec>>& GhostNetStages();

// The released code's `_make_divisible(v, divisor)`: rounds to the nearest
// multiple of divisor, never below divisor, never more than 10% below v.
int64_t MakeDivisible(double v, int64_t divisor);

class GhostModuleImpl : public torch::nn::Module {
 public:
  GhostModuleImpl(int64_t in, int64_t out, bool relu);
  torch::Tensor forward(torch::Tensor x);

  int64_t out_channels() const { return out_; }
  torch::nn::Sequential primary_conv{nullptr};
  torch::nn::Sequential cheap_operation{nullptr};
  bool relu() const { return relu_; }

 private:
  int64_t out_;
  bool relu_;
};
TORCH_MODULE(GhostModule);

class SqueezeExciteImpl : public torch::nn::Module {
 public:
  SqueezeExciteImpl(int64_t channels, double se_ratio);
  torch::Tensor forward(torch::Tensor x);

  torch::nn::Conv2d conv_reduce{nullptr};
  torch::nn::Conv2d conv_expand{nullptr};
};
TORCH_MODULE(SqueezeExcite);

class GhostBottleneckImpl : public torch::nn::Module {
 public:
  GhostBottleneckImpl(int64_t in, int64_t mid, int64_t out, const BottleneckSpec& spec);
  torch::Tensor forward(torch::Tensor x);

  int64_t stride() const { return stride_; }
  bool has_shortcut_conv() const { return !shortcut->is_empty(); }

  GhostModule ghost1{nullptr};
  torch::nn::Conv2d conv_dw{nullptr};     // only when stride > 1
  torch::nn::BatchNorm2d bn_dw{nullptr};  // only when stride > 1
  SqueezeExcite se{nullptr};              // only when se_ratio > 0
  GhostModule ghost2{nullptr};
  torch::nn::Sequential shortcut{nullptr};  // empty = identity

 private:
  int64_t stride_;
};
TORCH_MODULE(GhostBottleneck);

// The final 1x1 Conv-BN-ReLU (blocks.9.0).
class ConvBnActImpl : public torch::nn::Module {
 public:
  ConvBnActImpl(int64_t in, int64_t out);
  torch::Tensor forward(torch::Tensor x);

  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
};
TORCH_MODULE(ConvBnAct);

// Not thread-safe for concurrent training; forward in eval mode under
// torch::InferenceMode may run on several threads at once.
class GhostNetImpl : public torch::nn::Module {
 public:
  explicit GhostNetImpl(const GhostNetOptions& options);
  // x: [N, in_channels, H, W] float. Returns logits [N, num_classes].
  torch::Tensor forward(torch::Tensor x);

  const GhostNetOptions& options() const { return options_; }

  // Number of trainable parameters (BatchNorm running statistics excluded),
  // counted from the tensors this module holds.
  int64_t CountParameters() const;
  // Multiply-accumulates of one forward pass on an input_size x input_size
  // image, counted layer by layer from the convolution shapes (convolutions
  // and the classifier; BatchNorm, activations and pooling are not MACs).
  int64_t CountMacs() const;

  torch::nn::Conv2d conv_stem{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  // blocks[0..8] hold GhostBottlenecks, blocks[9] holds one ConvBnAct.
  std::vector<std::vector<GhostBottleneck>> stages;
  ConvBnAct final_conv{nullptr};
  torch::nn::Conv2d conv_head{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  GhostNetOptions options_;
  torch::nn::ModuleList blocks_{nullptr};  // registered as "blocks"
};
TORCH_MODULE(GhostNet);

// Seeds torch's generator and re-initialises every parameter the way
// torch.nn's defaults do, so the same seed always yields the same weights.
// Used when a model is served without a weights file.
void InitializeDeterministic(GhostNet& net, uint64_t seed);

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_GHOSTNET_H_
