#include "model/inference.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/planned_ghostnet.h"

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
  torch::Tensor b =
      conv.bias.defined() ? conv.bias.detach().to(torch::kFloat) : torch::zeros({w.size(0)});
  if (bn != nullptr) {
    torch::Tensor scale =
        bn->weight.detach() / torch::sqrt(bn->running_var.detach() + bn->options.eps());
    w = w * scale.view({-1, 1, 1, 1});
    b = (b - bn->running_mean.detach()) * scale + bn->bias.detach();
  }
  out.weight = channels_last ? w.contiguous(at::MemoryFormat::ChannelsLast) : w.contiguous();
  out.bias = b.contiguous();
  out.stride = (*conv.options.stride())[0];
  out.padding = (*conv.options.kernel_size())[0] / 2;  // GhostNet pads k/2
  out.groups = conv.options.groups();
  out.relu = relu;
  return out;
}

// Channels [begin, begin + count) of a depthwise convolution.
Conv Slice(const Conv& dw, int64_t begin, int64_t count, bool channels_last) {
  Conv out = dw;
  torch::Tensor w = dw.weight.narrow(0, begin, count);
  out.weight = channels_last ? w.contiguous(at::MemoryFormat::ChannelsLast) : w.contiguous();
  out.bias = dw.bias.narrow(0, begin, count).contiguous();
  out.groups = count;
  return out;
}

const nn::Conv2dImpl& ConvAt(nn::Sequential seq, size_t i) { return *seq[i]->as<nn::Conv2dImpl>(); }
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
  return out;
}

}  // namespace

InferenceGhostNet::InferenceGhostNet(GhostNetOptions net_options, InferenceOptions options)
    : net_options_(net_options), options_(options) {}

InferenceGhostNet::~InferenceGhostNet() = default;

absl::StatusOr<std::unique_ptr<InferenceGhostNet>> InferenceGhostNet::Create(
    const GhostNetImpl& net, const InferenceOptions& options) {
  if (options.precision != Precision::kFp32 && !options.planned) {
    return absl::InvalidArgumentError(absl::StrCat(
        "precision ", std::string(PrecisionName(options.precision)), " needs the planned engine"));
  }
  if (auto s = CheckPrecisionSupported(options.precision); !s.ok()) return s;
  if (options.precision == Precision::kInt8 && options.calibration == nullptr) {
    return absl::InvalidArgumentError(
        "precision int8 needs a calibration (\"calibration\" in the model config; make one with "
        "ghostserve-train calibrate)");
  }
  try {
    torch::NoGradGuard no_grad;
    const bool cl = options.channels_last;
    std::unique_ptr<InferenceGhostNet> m(new InferenceGhostNet(net.options(), options));
    m->layers_.stem = Fold(*net.conv_stem, net.bn1.get(), true, cl);
    for (const auto& stage : net.stages) {
      for (const auto& block : stage) {
        Bottleneck b;
        b.ghost1 = FoldGhost(*block->ghost1, cl);
        if (block->stride() > 1) {
          b.has_dw = true;
          b.dw = Fold(*block->conv_dw, block->bn_dw.get(), false, cl);
          const int64_t half = b.ghost1.primary.weight.size(0);
          const int64_t mid = b.dw.weight.size(0);
          b.dw_first = Slice(b.dw, 0, half, cl);
          b.dw_second = Slice(b.dw, half, mid - half, cl);
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
        m->layers_.blocks.push_back(std::move(b));
      }
    }
    m->layers_.final_conv = Fold(*net.final_conv->conv, net.final_conv->bn1.get(), true, cl);
    m->layers_.head = Fold(*net.conv_head, nullptr, true, cl);
    m->layers_.classifier = Linear{net.classifier->weight.detach().to(torch::kFloat).contiguous(),
                            net.classifier->bias.detach().to(torch::kFloat).contiguous()};
    if (options.precision == Precision::kInt8) {
      const std::string fingerprint = m->WeightsFingerprint();
      if (options.calibration->fingerprint != fingerprint) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the int8 calibration was measured on other weights (fingerprint ",
            options.calibration->fingerprint, ", these weights ", fingerprint,
            "); run ghostserve-train calibrate for these weights"));
      }
    }
    if (options.planned) {
      m->planned_ = std::make_unique<PlannedGhostNet>(m->layers_, m->net_options_,
                                                      options.precision, options.tune_threads,
                                                      options.calibration.get());
    }
    return m;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("compiling GhostNet failed: ", e.what()));
  }
}

void InferenceGhostNet::ForEachWeight(const std::function<void(const torch::Tensor&)>& f,
                                      bool aten_slices) const {
  auto conv = [&](const Conv& c) {
    f(c.weight);
    f(c.bias);
  };
  auto lin = [&](const Linear& l) {
    f(l.weight);
    f(l.bias);
  };
  conv(layers_.stem);
  for (const auto& b : layers_.blocks) {
    conv(b.ghost1.primary);
    conv(b.ghost1.cheap);
    if (b.has_dw) {
      conv(b.dw);
      if (aten_slices) {
        conv(b.dw_first);
        conv(b.dw_second);
      }
    }
    if (b.has_se) {
      lin(b.se_reduce);
      lin(b.se_expand);
    }
    conv(b.ghost2.primary);
    conv(b.ghost2.cheap);
    if (b.has_shortcut) {
      conv(b.shortcut_dw);
      conv(b.shortcut_pw);
    }
  }
  conv(layers_.final_conv);
  conv(layers_.head);
  lin(layers_.classifier);
}

int64_t InferenceGhostNet::WeightBytes() const {
  int64_t bytes = 0;
  ForEachWeight(
      [&](const torch::Tensor& t) {
        if (t.defined()) bytes += t.numel() * t.element_size();
      },
      /*aten_slices=*/true);
  if (planned_ != nullptr) bytes += planned_->PackedWeightBytes();
  return bytes;
}

std::string InferenceGhostNet::WeightsFingerprint() const {
  // FNV-1a over the architecture and every folded tensor's bytes (in NCHW
  // order whatever the layout held, without the ATen engine's copies).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  };
  const std::string arch = absl::StrCat(net_options_.width, "/", net_options_.num_classes, "/",
                                        net_options_.in_channels, "/", net_options_.input_size);
  mix(arch.data(), arch.size());
  ForEachWeight(
      [&](const torch::Tensor& t) {
        if (!t.defined()) return;
        const torch::Tensor c = t.to(torch::kFloat).contiguous();
        mix(c.data_ptr(), static_cast<size_t>(c.numel()) * sizeof(float));
      },
      /*aten_slices=*/false);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

absl::StatusOr<Calibration> InferenceGhostNet::Calibrate(
    const std::vector<torch::Tensor>& batches) const {
  if (planned_ == nullptr || options_.precision != Precision::kFp32) {
    return absl::FailedPreconditionError("calibration runs on a planned fp32 model");
  }
  const int64_t c = net_options_.in_channels;
  for (const auto& x : batches) {
    if (x.dim() != 4 || x.size(1) != c || x.size(2) < 32 || x.size(3) < 32 || x.size(0) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibration batches must be [N, ", c, ", H, W] with H, W >= 32, got ",
          c10::str(x.sizes())));
    }
  }
  if (batches.empty()) return absl::InvalidArgumentError("calibration needs at least one image");
  try {
    c10::InferenceMode guard;
    Calibration cal = planned_->Calibrate(batches);
    cal.fingerprint = WeightsFingerprint();
    return cal;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("calibration failed: ", e.what()));
  }
}

int64_t InferenceGhostNet::WorkspaceBytes() const {
  return planned_ != nullptr ? planned_->WorkspaceBytes() : 0;
}

torch::Tensor InferenceGhostNet::RunConv(const Conv& c, const torch::Tensor& x) const {
  torch::Tensor y;
  if (options_.force_onednn) {
    y = at::mkldnn_convolution(x, c.weight, c.bias, {c.padding, c.padding}, {c.stride, c.stride},
                               {1, 1}, c.groups);
  } else {
    y = at::conv2d(x, c.weight, c.bias, {c.stride, c.stride}, {c.padding, c.padding}, {1, 1},
                   c.groups);
  }
  if (c.relu) y.relu_();
  return y;
}

std::pair<torch::Tensor, torch::Tensor> InferenceGhostNet::RunGhostHalves(
    const Ghost& g, const torch::Tensor& x) const {
  torch::Tensor x1 = RunConv(g.primary, x);
  torch::Tensor x2 = RunConv(g.cheap, x1);
  const int64_t rest = g.out_channels - x1.size(1);
  if (x2.size(1) != rest) x2 = x2.narrow(1, 0, rest);
  return {x1, x2};
}

torch::Tensor InferenceGhostNet::RunGhost(const Ghost& g, const torch::Tensor& x) const {
  auto [x1, x2] = RunGhostHalves(g, x);
  return at::cat({x1, x2}, 1);
}

torch::Tensor InferenceGhostNet::RunBottleneck(const Bottleneck& b, const torch::Tensor& x) const {
  // The Ghost module's output is concat(x1, x2). Channel-wise consumers do not
  // need the concat: a stride-2 depthwise convolution runs on each half (the
  // concat then happens at a quarter of the size), and the residual add goes
  // into each half of the shortcut in place. Concats on the large early maps
  // were a quarter of the forward time at batch 8.
  torch::Tensor y;
  if (b.has_dw) {
    auto [a1, a2] = RunGhostHalves(b.ghost1, x);
    y = at::cat({RunConv(b.dw_first, a1), RunConv(b.dw_second, a2)}, 1);
  } else {
    y = RunGhost(b.ghost1, x);
  }
  if (b.has_se) {
    // On the pooled [N, C] map the 1x1 convolutions are matrix products.
    torch::Tensor s = y.mean({2, 3});
    s = at::linear(s, b.se_reduce.weight, b.se_reduce.bias).relu_();
    s = at::linear(s, b.se_expand.weight, b.se_expand.bias);
    s = s.add_(3.0).clamp_(0.0, 6.0).div_(6.0);  // hard sigmoid
    y = y * s.view({s.size(0), s.size(1), 1, 1});
  }
  auto [b1, b2] = RunGhostHalves(b.ghost2, y);
  // The block input is dead after this point and always a map this class
  // allocated (the stem's or a previous block's output), so the identity
  // shortcut can take the sum in place.
  torch::Tensor out = b.has_shortcut ? RunConv(b.shortcut_pw, RunConv(b.shortcut_dw, x)) : x;
  const int64_t c1 = b1.size(1);
  out.narrow(1, 0, c1).add_(b1);
  out.narrow(1, c1, b2.size(1)).add_(b2);
  return out;
}

absl::StatusOr<torch::Tensor> InferenceGhostNet::Forward(const torch::Tensor& input) const {
  const int64_t c = net_options_.in_channels;
  if (input.dim() != 4 || input.size(1) != c || input.size(2) < 32 || input.size(3) < 32 ||
      input.size(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("input must be [N, ", c,
                                                   ", H, W] with N >= 1 and H, W >= 32, got ",
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
  if (planned_ != nullptr) return planned_->Forward(input);
  torch::Tensor x = input.to(torch::kFloat);
  x = options_.channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x.contiguous();
  x = RunConv(layers_.stem, x);
  for (const auto& b : layers_.blocks) x = RunBottleneck(b, x);
  x = RunConv(layers_.final_conv, x);
  x = x.mean({2, 3}, /*keepdim=*/true);
  x = RunConv(layers_.head, x).flatten(1);
  return at::linear(x, layers_.classifier.weight, layers_.classifier.bias);
}

}  // namespace ghostserve::model
