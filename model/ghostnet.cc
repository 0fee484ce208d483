#include "model/ghostnet.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace ghostserve::model {
namespace {

namespace nn = torch::nn;

nn::Conv2d Conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                bool bias) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                        .stride(stride)
                        .padding(kernel / 2)
                        .groups(groups)
                        .bias(bias));
}

// Output side of a convolution with padding kernel/2.
int64_t ConvOut(int64_t side, int64_t kernel, int64_t stride) {
  return (side + 2 * (kernel / 2) - kernel) / stride + 1;
}

// MACs of a convolution module on an input of side x side; updates side.
int64_t ConvMacs(const nn::Conv2d& conv, int64_t* side) {
  const auto& o = conv->options;
  const int64_t k = (*o.kernel_size())[0];
  const int64_t s = (*o.stride())[0];
  *side = ConvOut(*side, k, s);
  return *side * *side * o.out_channels() * (o.in_channels() / o.groups()) * k * k;
}

int64_t SequentialConvMacs(const nn::Sequential& seq, int64_t* side) {
  int64_t macs = 0;
  for (const auto& child : seq->children()) {
    if (auto conv = std::dynamic_pointer_cast<nn::Conv2dImpl>(child)) {
      macs += ConvMacs(nn::Conv2d(conv), side);
    }
  }
  return macs;
}

}  // namespace

absl::Status GhostNetOptions::Validate() const {
  if (!(width >= 0.1 && width <= 4.0)) {
    return absl::InvalidArgumentError(absl::StrCat("width must be in [0.1, 4], got ", width));
  }
  if (num_classes < 1 || num_classes > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be in [1, 100000], got ", num_classes));
  }
  if (in_channels < 1 || in_channels > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("in_channels must be in [1, 4], got ", in_channels));
  }
  if (input_size < 32 || input_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("input_size must be in [32, 1024], got ", input_size));
  }
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("dropout must be in [0, 1), got ", dropout));
  }
  return absl::OkStatus();
}

const std::vector<std::vector<BottleneckSpec>>& GhostNetStages() {
  static const auto* const kStages = new std::vector<std::vector<BottleneckSpec>>{
      {{3, 16, 16, 0.0, 1}},
      {{3, 48, 24, 0.0, 2}},
      {{3, 72, 24, 0.0, 1}},
      {{5, 72, 40, 0.25, 2}},
      {{5, 120, 40, 0.25, 1}},
      {{3, 240, 80, 0.0, 2}},
      {{3, 200, 80, 0.0, 1},
       {3, 184, 80, 0.0, 1},
       {3, 184, 80, 0.0, 1},
       {3, 480, 112, 0.25, 1},
       {3, 672, 112, 0.25, 1}},
      {{5, 672, 160, 0.25, 2}},
      {{5, 960, 160, 0.0, 1},
       {5, 960, 160, 0.25, 1},
       {5, 960, 160, 0.0, 1},
       {5, 960, 160, 0.25, 1}},
  };
  return *kStages;
}

int64_t MakeDivisible(double v, int64_t divisor) {
  // Python: max(divisor, int(v + divisor / 2) // divisor * divisor)
  int64_t new_v = static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor;
  if (new_v < divisor) new_v = divisor;
  if (new_v < 0.9 * v) new_v += divisor;
  return new_v;
}

GhostModuleImpl::GhostModuleImpl(int64_t in, int64_t out, bool relu) : out_(out), relu_(relu) {
  const int64_t init = (out + 1) / 2;  // ceil(out / ratio), ratio 2
  const int64_t cheap = init;          // init * (ratio - 1)
  primary_conv = nn::Sequential(Conv(in, init, 1, 1, 1, false), nn::BatchNorm2d(init));
  cheap_operation = nn::Sequential(Conv(init, cheap, 3, 1, init, false), nn::BatchNorm2d(cheap));
  if (relu) {
    primary_conv->push_back(nn::ReLU(nn::ReLUOptions(true)));
    cheap_operation->push_back(nn::ReLU(nn::ReLUOptions(true)));
  }
  register_module("primary_conv", primary_conv);
  register_module("cheap_operation", cheap_operation);
}

torch::Tensor GhostModuleImpl::forward(torch::Tensor x) {
  torch::Tensor x1 = primary_conv->forward(x);
  torch::Tensor x2 = cheap_operation->forward(x1);
  return torch::cat({x1, x2}, 1).narrow(1, 0, out_);
}

SqueezeExciteImpl::SqueezeExciteImpl(int64_t channels, double se_ratio) {
  const int64_t reduced = MakeDivisible(channels * se_ratio, 4);
  conv_reduce = register_module("conv_reduce", Conv(channels, reduced, 1, 1, 1, true));
  conv_expand = register_module("conv_expand", Conv(reduced, channels, 1, 1, 1, true));
}

torch::Tensor SqueezeExciteImpl::forward(torch::Tensor x) {
  torch::Tensor s = torch::adaptive_avg_pool2d(x, {1, 1});
  s = torch::relu(conv_reduce->forward(s));
  s = conv_expand->forward(s);
  return x * (torch::relu6(s + 3.0) / 6.0);  // hard sigmoid gate
}

GhostBottleneckImpl::GhostBottleneckImpl(int64_t in, int64_t mid, int64_t out,
                                         const BottleneckSpec& spec)
    : stride_(spec.stride) {
  ghost1 = register_module("ghost1", GhostModule(in, mid, /*relu=*/true));
  if (stride_ > 1) {
    conv_dw = register_module("conv_dw", Conv(mid, mid, spec.kernel, stride_, mid, false));
    bn_dw = register_module("bn_dw", nn::BatchNorm2d(mid));
  }
  if (spec.se_ratio > 0.0) {
    se = register_module("se", SqueezeExcite(mid, spec.se_ratio));
  }
  ghost2 = register_module("ghost2", GhostModule(mid, out, /*relu=*/false));
  shortcut = nn::Sequential();
  if (!(in == out && stride_ == 1)) {
    shortcut->push_back(Conv(in, in, spec.kernel, stride_, in, false));
    shortcut->push_back(nn::BatchNorm2d(in));
    shortcut->push_back(Conv(in, out, 1, 1, 1, false));
    shortcut->push_back(nn::BatchNorm2d(out));
  }
  register_module("shortcut", shortcut);
}

torch::Tensor GhostBottleneckImpl::forward(torch::Tensor x) {
  torch::Tensor residual = x;
  x = ghost1->forward(x);
  if (stride_ > 1) x = bn_dw->forward(conv_dw->forward(x));
  if (se) x = se->forward(x);
  x = ghost2->forward(x);
  return x + (shortcut->is_empty() ? residual : shortcut->forward(residual));
}

ConvBnActImpl::ConvBnActImpl(int64_t in, int64_t out) {
  conv = register_module("conv", Conv(in, out, 1, 1, 1, false));
  bn1 = register_module("bn1", nn::BatchNorm2d(out));
}

torch::Tensor ConvBnActImpl::forward(torch::Tensor x) {
  return torch::relu(bn1->forward(conv->forward(x)));
}

GhostNetImpl::GhostNetImpl(const GhostNetOptions& options) : options_(options) {
  const double w = options.width;
  int64_t channels = MakeDivisible(16 * w, 4);
  conv_stem = register_module("conv_stem", Conv(options.in_channels, channels, 3, 2, 1, false));
  bn1 = register_module("bn1", nn::BatchNorm2d(channels));

  blocks_ = nn::ModuleList();
  int64_t last_expansion = 0;
  for (const auto& stage_specs : GhostNetStages()) {
    nn::ModuleList stage;
    std::vector<GhostBottleneck> stage_blocks;
    for (const BottleneckSpec& spec : stage_specs) {
      const int64_t out = MakeDivisible(spec.out * w, 4);
      const int64_t mid = MakeDivisible(spec.expansion * w, 4);
      GhostBottleneck block(channels, mid, out, spec);
      stage->push_back(block);
      stage_blocks.push_back(block);
      channels = out;
      last_expansion = spec.expansion;
    }
    blocks_->push_back(stage);
    stages.push_back(std::move(stage_blocks));
  }
  const int64_t final_channels = MakeDivisible(last_expansion * w, 4);
  final_conv = ConvBnAct(channels, final_channels);
  blocks_->push_back(nn::ModuleList(final_conv));
  register_module("blocks", blocks_);

  conv_head = register_module("conv_head", Conv(final_channels, 1280, 1, 1, 1, /*bias=*/true));
  classifier = register_module("classifier", nn::Linear(1280, options.num_classes));
}

torch::Tensor GhostNetImpl::forward(torch::Tensor x) {
  x = torch::relu(bn1->forward(conv_stem->forward(x)));
  for (auto& stage : stages) {
    for (auto& block : stage) x = block->forward(x);
  }
  x = final_conv->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  x = torch::relu(conv_head->forward(x)).flatten(1);
  if (options_.dropout > 0.0) {
    x = torch::dropout(x, options_.dropout, is_training());
  }
  return classifier->forward(x);
}

int64_t GhostNetImpl::CountParameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

int64_t GhostNetImpl::CountMacs() const {
  int64_t side = options_.input_size;
  int64_t macs = ConvMacs(conv_stem, &side);
  for (const auto& stage : stages) {
    for (const auto& block : stage) {
      const int64_t in_side = side;
      macs += SequentialConvMacs(block->ghost1->primary_conv, &side);
      macs += SequentialConvMacs(block->ghost1->cheap_operation, &side);
      if (block->stride() > 1) macs += ConvMacs(block->conv_dw, &side);
      if (block->se) {
        int64_t one = 1;  // squeeze-excite runs on the pooled 1x1 map
        macs += ConvMacs(block->se->conv_reduce, &one);
        macs += ConvMacs(block->se->conv_expand, &one);
      }
      macs += SequentialConvMacs(block->ghost2->primary_conv, &side);
      macs += SequentialConvMacs(block->ghost2->cheap_operation, &side);
      int64_t shortcut_side = in_side;
      macs += SequentialConvMacs(block->shortcut, &shortcut_side);
    }
  }
  macs += ConvMacs(final_conv->conv, &side);
  int64_t one = 1;
  macs += ConvMacs(conv_head, &one);
  macs += classifier->options.in_features() * classifier->options.out_features();
  return macs;
}

void InitializeDeterministic(GhostNet& net, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& module : net->modules(/*include_self=*/false)) {
    if (auto* conv = module->as<nn::Conv2d>()) {
      // Kaiming normal, fan-out, as timm initialises GhostNet.
      const auto& w = conv->weight;
      const double fan_out = w.size(0) / conv->options.groups() * w.size(2) * w.size(3);
      w.copy_(at::normal(0.0, std::sqrt(2.0 / fan_out), w.sizes(), gen));
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = module->as<nn::BatchNorm2d>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
      bn->running_mean.zero_();
      bn->running_var.fill_(1.0);
    } else if (auto* fc = module->as<nn::Linear>()) {
      fc->weight.copy_(at::normal(0.0, 0.01, fc->weight.sizes(), gen));
      fc->bias.zero_();
    }
  }
}

}  // namespace ghostserve::model
