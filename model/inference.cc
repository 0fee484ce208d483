#include "model/inference.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include <utility>

#include "absl/strings/str_cat.h"

namespace ghostserve::model {
namespace {

namespace nn = torch::nn;
using Conv = InferenceGhostNet::Conv;
using Linear = InferenceGhostNet::Linear;

// Folds y = BN(conv(x)) into one convolution with bias.
Conv Fold(const nn::Conv2dImpl& conv, const nn::BatchNorm2dImpl* bn, bool relu,
          bool channels_last) {
  Conv out;
  torch::Tensor w = conv.weight.detach().to(torch::kFloat);
  torch::Tensor b = conv.bias.defined() ? conv.bias.detach().to(torch::kFloat)
                                        : torch::zeros({w.size(0)});
  if (bn != nullptr) {
    torch::Tensor scale = bn->weight.detach() /
                          torch::sqrt(bn->running_var.detach() + bn->options.eps());
    w = w * scale.view({-1, 1, 1, 1});
    b = (b - bn->running_mean.detach()) * scale + bn->bias.detach();
  }
  out.weight = channels_last ? w.contiguous(at::MemoryFormat::ChannelsLast)
                             : w.contiguous();
  out.bias = b.contiguous();
  out.stride = (*conv.options.stride())[0];
  out.padding = (*conv.options.kernel_size())[0] / 2;  // GhostNet pads k/2
  out.groups = conv.options.groups();
  out.relu = relu;
  return out;
}


const nn::Conv2dImpl& ConvAt(nn::Sequential seq, size_t i) {
  return *seq[i]->as<nn::Conv2dImpl>();
}
const nn::BatchNorm2dImpl* BnAt(nn::Sequential seq, size_t i) {
  return seq[i]->as<nn::BatchNorm2dImpl>();
}

Linear ToLinear(const nn::Conv2dImpl& conv) {
  return Linear{conv.weight.detach().to(torch::kFloat).flatten(1).contiguous(),
                conv.bias.detach().to(torch::kFloat).contiguous()};
}

InferenceGhostNet::Ghost FoldGhost(const GhostModuleImpl& g, bool cl) {
  InferenceGhostNet::Ghost out;
  out.primary = Fold(ConvAt(g.primary_conv, 0), BnAt(g.primary_conv, 1), g.relu(), cl);
  out.cheap = Fold(ConvAt(g.cheap_operation, 0), BnAt(g.cheap_operation, 1), g.relu(), cl);
  out.out_channels = g.out_channels();
  const int64_t c = out.cheap.weight.size(0);
  out.cheap_taps = out.cheap.weight.contiguous().view({c, 9}).t().contiguous();
  return out;
}

// The Ghost module's tail in one pass over a channels-last map:
//   out[..., 0:C]      = x1
//   out[..., C:C+C2]   = act(depthwise3x3(x1) + bias), C2 = out_channels - C
// x1 is [N, C, H, W] channels-last; taps is [9, C]. Compiled for AVX2 and
// generic x86-64, picked at load time.
__attribute__((target_clones("avx2", "default")))
void GhostTailKernel(const float* __restrict in, const float* __restrict taps,
                     const float* __restrict bias, float* __restrict out, int64_t h, int64_t w,
                     int64_t c, int64_t c2, int64_t oc, bool relu, int64_t row_begin,
                     int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / h, y = r % h;
    const float* __restrict rows[3];
    for (int64_t dy = -1; dy <= 1; ++dy) {
      const int64_t yy = y + dy;
      rows[dy + 1] = (yy < 0 || yy >= h) ? nullptr : in + (n * h + yy) * w * c;
    }
    for (int64_t x = 0; x < w; ++x) {
      float* __restrict o = out + ((n * h + y) * w + x) * oc;
      const float* __restrict center = rows[1] + x * c;
      for (int64_t k = 0; k < c; ++k) o[k] = center[k];
      float* __restrict acc = o + c;
      for (int64_t k = 0; k < c2; ++k) acc[k] = bias[k];
      const bool interior = x > 0 && x + 1 < w;
      for (int64_t dy = 0; dy < 3; ++dy) {
        const float* __restrict row = rows[dy];
        if (row == nullptr) continue;
        if (interior) {
          const float* __restrict s0 = row + (x - 1) * c;
          const float* __restrict s1 = s0 + c;
          const float* __restrict s2 = s1 + c;
          const float* __restrict t0 = taps + (dy * 3) * c;
          const float* __restrict t1 = t0 + c;
          const float* __restrict t2 = t1 + c;
          for (int64_t k = 0; k < c2; ++k) {
            acc[k] += s0[k] * t0[k] + s1[k] * t1[k] + s2[k] * t2[k];
          }
        } else {
          for (int64_t dx = -1; dx <= 1; ++dx) {
            const int64_t xx = x + dx;
            if (xx < 0 || xx >= w) continue;
            const float* __restrict src = row + xx * c;
            const float* __restrict t = taps + (dy * 3 + dx + 1) * c;
            for (int64_t k = 0; k < c2; ++k) acc[k] += src[k] * t[k];
          }
        }
      }
      if (relu) {
        for (int64_t k = 0; k < c2; ++k) acc[k] = acc[k] > 0.0f ? acc[k] : 0.0f;
      }
    }
  }
}

torch::Tensor GhostTail(const InferenceGhostNet::Ghost& g, const torch::Tensor& x1) {
  const int64_t n = x1.size(0), c = x1.size(1), h = x1.size(2), w = x1.size(3);
  const int64_t oc = g.out_channels;
  const int64_t c2 = oc - c;
  torch::Tensor out = at::empty({n, oc, h, w},
                                x1.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* in = x1.data_ptr<float>();
  const float* taps = g.cheap_taps.data_ptr<float>();
  const float* bias = g.cheap.bias.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t rows = n * h;
  // About 32k multiply-adds per task keeps thread hand-off cheap.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, w * c2 * 9));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    GhostTailKernel(in, taps, bias, o, h, w, c, c2, oc, g.cheap.relu, begin, end);
  });
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceGhostNet>> InferenceGhostNet::Create(
    const GhostNetImpl& net, const InferenceOptions& options) {
  try {
    torch::NoGradGuard no_grad;
    const bool cl = options.channels_last;
    std::unique_ptr<InferenceGhostNet> m(
        new InferenceGhostNet(net.options(), options));
    m->stem_ = Fold(*net.conv_stem, net.bn1.get(), true, cl);
    for (const auto& stage : net.stages) {
      for (const auto& block : stage) {
        Bottleneck b;
        b.ghost1 = FoldGhost(*block->ghost1, cl);
        if (block->stride() > 1) {
          b.has_dw = true;
          b.dw = Fold(*block->conv_dw, block->bn_dw.get(), false, cl);
        }
        if (block->se) {
          b.has_se = true;
          b.se_reduce = ToLinear(*block->se->conv_reduce);
          b.se_expand = ToLinear(*block->se->conv_expand);
        }
        b.ghost2 = FoldGhost(*block->ghost2, cl);
        if (block->has_shortcut_conv()) {
          b.has_shortcut = true;
          b.shortcut_dw = Fold(ConvAt(block->shortcut, 0), BnAt(block->shortcut, 1), false, cl);
          b.shortcut_pw = Fold(ConvAt(block->shortcut, 2), BnAt(block->shortcut, 3), false, cl);
        }
        m->blocks_.push_back(std::move(b));
      }
    }
    m->final_conv_ = Fold(*net.final_conv->conv, net.final_conv->bn1.get(), true, cl);
    m->head_ = Fold(*net.conv_head, nullptr, true, cl);
    m->classifier_ = Linear{net.classifier->weight.detach().to(torch::kFloat).contiguous(),
                            net.classifier->bias.detach().to(torch::kFloat).contiguous()};
    return m;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("compiling GhostNet failed: ", e.what()));
  }
}

int64_t InferenceGhostNet::WeightBytes() const {
  int64_t bytes = 0;
  auto add = [&](const torch::Tensor& t) {
    if (t.defined()) bytes += t.numel() * t.element_size();
  };
  auto conv = [&](const Conv& c) { add(c.weight); add(c.bias); };
  auto lin = [&](const Linear& l) { add(l.weight); add(l.bias); };
  conv(stem_);
  for (const auto& b : blocks_) {
    conv(b.ghost1.primary); conv(b.ghost1.cheap);
    if (b.has_dw) conv(b.dw);
    if (b.has_se) { lin(b.se_reduce); lin(b.se_expand); }
    conv(b.ghost2.primary); conv(b.ghost2.cheap);
    if (b.has_shortcut) { conv(b.shortcut_dw); conv(b.shortcut_pw); }
  }
  conv(final_conv_);
  conv(head_);
  lin(classifier_);
  return bytes;
}

torch::Tensor InferenceGhostNet::RunConv(const Conv& c, const torch::Tensor& x) const {
  torch::Tensor y;
  if (options_.force_onednn) {
    y = at::mkldnn_convolution(x, c.weight, c.bias, {c.padding, c.padding},
                               {c.stride, c.stride}, {1, 1}, c.groups);
  } else {
    y = at::conv2d(x, c.weight, c.bias, {c.stride, c.stride},
                   {c.padding, c.padding}, {1, 1}, c.groups);
  }
  if (c.relu) y.relu_();
  return y;
}

torch::Tensor InferenceGhostNet::RunGhost(const Ghost& g, const torch::Tensor& x) const {
  torch::Tensor x1 = RunConv(g.primary, x);
  const int64_t c = x1.size(1);
  if (options_.fused_ghost && x1.scalar_type() == torch::kFloat &&
      x1.is_contiguous(at::MemoryFormat::ChannelsLast) && g.out_channels >= c &&
      g.out_channels <= 2 * c) {
    return GhostTail(g, x1);
  }
  torch::Tensor x2 = RunConv(g.cheap, x1);
  torch::Tensor out = at::cat({x1, x2}, 1);
  if (out.size(1) != g.out_channels) out = out.narrow(1, 0, g.out_channels);
  return out;
}

torch::Tensor InferenceGhostNet::RunBottleneck(const Bottleneck& b,
                                               const torch::Tensor& x) const {
  torch::Tensor y = RunGhost(b.ghost1, x);
  if (b.has_dw) y = RunConv(b.dw, y);
  if (b.has_se) {
    // On the pooled [N, C] map the 1x1 convolutions are matrix products.
    torch::Tensor s = y.mean({2, 3});
    s = at::linear(s, b.se_reduce.weight, b.se_reduce.bias).relu_();
    s = at::linear(s, b.se_expand.weight, b.se_expand.bias);
    s = s.add_(3.0).clamp_(0.0, 6.0).div_(6.0);  // hard sigmoid
    y = y * s.view({s.size(0), s.size(1), 1, 1});
  }
  y = RunGhost(b.ghost2, y);
  if (b.has_shortcut) {
    return y.add_(RunConv(b.shortcut_pw, RunConv(b.shortcut_dw, x)));
  }
  return y.add_(x);
}

absl::StatusOr<torch::Tensor> InferenceGhostNet::Forward(
    const torch::Tensor& input) const {
  const int64_t c = net_options_.in_channels;
  if (input.dim() != 4 || input.size(1) != c || input.size(2) < 32 ||
      input.size(3) < 32 || input.size(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input must be [N, ", c, ", H, W] with N >= 1 and H, W >= 32, got ",
        c10::str(input.sizes())));
  }
  try {
    return ForwardUnchecked(input);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("GhostNet forward failed: ", e.what()));
  }
}

torch::Tensor InferenceGhostNet::ForwardUnchecked(const torch::Tensor& input) const {
  c10::InferenceMode guard;
  torch::Tensor x = input.to(torch::kFloat);
  x = options_.channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast)
                             : x.contiguous();
  x = RunConv(stem_, x);
  for (const auto& b : blocks_) x = RunBottleneck(b, x);
  x = RunConv(final_conv_, x);
  x = x.mean({2, 3}, /*keepdim=*/true);
  x = RunConv(head_, x).flatten(1);
  return at::linear(x, classifier_.weight, classifier_.bias);
}

}  // namespace ghostserve::model
