#include "model/planned_ghostnet.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>

namespace ghostserve::model {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;
using Conv = InferenceGhostNet::Conv;
using Linear = InferenceGhostNet::Linear;

const dnnl::engine& CpuEngine() {
  static const auto* const kEngine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *kEngine;
}

// Buffer ids that are not workspace buffers.
constexpr int kInput = -1;   // the caller's input tensor, bound per call
constexpr int kOutput = -2;  // the logits tensor, bound per call
constexpr int kFixed = -3;   // a weight or bias the model holds

constexpr size_t kAlign = 64;
size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// The post-ops of the squeeze-excite gate: relu6(x + 3) / 6 as
// clip(x / 6 + 1/2, 0, 1).
void AppendHardSigmoid(dnnl::post_ops& ops) {
  ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f / 6.f, 0.5f);
  ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, 1.f);
}

}  // namespace

// One layer's weights, or a slice of them: the plain source tensor and every
// blocked layout a primitive asked for, reordered once.
struct LayerWeights {
  std::string name;      // the step that runs it (calibration key)
  torch::Tensor weight;  // contiguous: OIHW, or [O, I] for inner products
  torch::Tensor bias;    // [O]; undefined when this slice adds no bias
  // int8: one scale per output channel, max |w| / 127 (made on first use);
  // the packing reorder rounds w / scale to int8.
  std::vector<float> wscale;
  memory::dims dims;     // oneDNN weight dims (goihw for depthwise)
  Tag plain_tag = Tag::oihw;
  int64_t stride = 1, padding = 0, groups = 1;
  bool relu = false;
  memory bias_mem;  // empty without bias
  std::vector<std::pair<memory::desc, memory>> packed;

  // Symmetric per-output-channel int8: w ~ wscale[o] * q, |q| <= 127.
  void Quantize() {
    if (!wscale.empty()) return;
    const torch::Tensor amax = weight.reshape({weight.size(0), -1}).abs().amax(1);
    const torch::Tensor scale =
        torch::where(amax > 0, amax / 127.f, torch::ones_like(amax)).contiguous();
    wscale.assign(scale.data_ptr<float>(), scale.data_ptr<float>() + scale.numel());
  }

  memory Packed(const memory::desc& want) {
    for (const auto& [md, mem] : packed) {
      if (md == want) return mem;
    }
    memory plain(memory::desc(dims, Dt::f32, plain_tag), CpuEngine(), weight.data_ptr());
    memory out(want, CpuEngine());
    dnnl::primitive_attr attr;
    if (want.data_type() == Dt::s8) {
      // Quantized by the reorder itself, from the f32 weights: on CPUs
      // without VNNI oneDNN's int8 kernels want 7-bit weights (its packed
      // layout halves them, against int16 overflow), and one rounding from
      // f32 loses less than halving an 8-bit rounding.
      Quantize();
      std::vector<float> inverse(wscale.size());
      for (size_t i = 0; i < inverse.size(); ++i) inverse[i] = 1.f / wscale[i];
      attr.set_output_scales(1 << 0, inverse);
    }
    dnnl::stream s(CpuEngine());
    dnnl::reorder(dnnl::reorder::primitive_desc(CpuEngine(), plain.get_desc(), CpuEngine(), want,
                                                attr))
        .execute(s, plain, out);
    s.wait();
    packed.emplace_back(want, out);
    return out;
  }

  int64_t out_channels() const { return weight.size(0); }
  memory::desc bias_desc() const { return bias.defined() ? bias_mem.get_desc() : memory::desc(); }
};

// Which part of a layer a LayerWeights holds: output channels
// [out_begin, out_begin + out_count) and input channels
// [in_begin, in_begin + in_count); count -1 means to the end. Depthwise
// layers are sliced by output channel only (each reads its own channel).
struct Slice {
  int64_t out_begin = 0, out_count = -1;
  int64_t in_begin = 0, in_count = -1;
  bool bias = true;  // false: the slice adds onto another that has the bias
  bool relu = false;
};

struct PlannedGhostNet::PackedWeights {
  std::vector<std::unique_ptr<LayerWeights>> all;

  LayerWeights* AddConv(const std::string& name, const Conv& c, const Slice& s) {
    const bool depthwise = c.groups > 1;
    TORCH_CHECK(!depthwise || (c.groups == c.weight.size(0) && c.weight.size(1) == 1),
                "planned GhostNet: only dense and depthwise convolutions");
    auto l = Make(c.weight, c.bias, s, depthwise);
    l->name = name;
    l->stride = c.stride;
    l->padding = c.padding;
    const int64_t o = l->weight.size(0), i = l->weight.size(1), kh = l->weight.size(2),
                  kw = l->weight.size(3);
    if (depthwise) {
      l->groups = o;
      l->dims = {o, 1, 1, kh, kw};
      l->plain_tag = Tag::goihw;
    } else {
      l->dims = {o, i, kh, kw};
      l->plain_tag = Tag::oihw;
    }
    return Keep(std::move(l));
  }

  LayerWeights* AddLinear(const std::string& name, const torch::Tensor& weight,
                          const torch::Tensor& bias, const Slice& s) {
    auto l = Make(weight.flatten(1), bias, s, false);
    l->name = name;
    l->dims = {l->weight.size(0), l->weight.size(1)};
    l->plain_tag = Tag::ab;
    return Keep(std::move(l));
  }

 private:
  static std::unique_ptr<LayerWeights> Make(const torch::Tensor& weight, const torch::Tensor& bias,
                                            const Slice& s, bool depthwise) {
    auto l = std::make_unique<LayerWeights>();
    const int64_t oc = s.out_count < 0 ? weight.size(0) - s.out_begin : s.out_count;
    torch::Tensor w = weight.narrow(0, s.out_begin, oc);
    if (!depthwise) {
      const int64_t ic = s.in_count < 0 ? weight.size(1) - s.in_begin : s.in_count;
      w = w.narrow(1, s.in_begin, ic);
    }
    l->weight = w.contiguous();
    if (s.bias) {
      l->bias = bias.narrow(0, s.out_begin, oc).contiguous();
      l->bias_mem = memory(memory::desc({oc}, Dt::f32, Tag::a), CpuEngine(), l->bias.data_ptr());
    }
    l->relu = s.relu;
    return l;
  }

  LayerWeights* Keep(std::unique_ptr<LayerWeights> l) {
    all.push_back(std::move(l));
    return all.back().get();
  }

 public:
  // GhostNet's layers, sliced so that no map is ever concatenated: every
  // map between blocks is kept as two dense halves (the halves of the Ghost
  // module that wrote it), and a layer reading such a map runs as two
  // primitives, one per half, the second summing onto the first.
  struct Block {
    int64_t in_split = 0, in = 0;  // input halves: [0, in_split), [in_split, in)
    int64_t h1 = 0, mid = 0;       // ghost1 halves
    int64_t h2 = 0, out = 0;       // ghost2 halves (= the output's halves)
    LayerWeights *g1_primary[2] = {}, *g1_cheap = nullptr;
    LayerWeights* dw[2] = {};
    LayerWeights *se_reduce[2] = {}, *se_expand[2] = {};
    LayerWeights *g2_primary[2] = {}, *g2_cheap = nullptr;
    LayerWeights* shortcut_dw[2] = {};
    LayerWeights* shortcut_pw[2][2] = {};  // [output half][input half]
  };
  LayerWeights* stem[2] = {};
  int64_t stem_split = 0;
  std::vector<Block> blocks;
  LayerWeights* final_conv[2] = {};
  LayerWeights* head = nullptr;
  LayerWeights* classifier = nullptr;

  // A dense layer over a two-half input: part 0 reads the first half and adds
  // the bias, part 1 reads the second half and sums onto part 0 (then ReLU).
  void SplitInput(const std::string& name, const Conv& c, int64_t split, int64_t out_begin,
                  int64_t out_count, LayerWeights* parts[2]) {
    parts[0] = AddConv(name + ".in0", c, {out_begin, out_count, 0, split, true, false});
    parts[1] = AddConv(name + ".in1", c, {out_begin, out_count, split, -1, false, c.relu});
  }
};

struct PlannedGhostNet::Plan {
  struct Arg {
    int id;
    int buffer;  // a workspace buffer, or kInput, kOutput, kFixed
    memory::desc md;
    memory fixed;  // for kFixed
  };
  struct Step {
    dnnl::primitive primitive;
    std::vector<Arg> args;
    int threads = 1;  // the OpenMP team it was created for and runs with
    std::string name;  // calibration key
  };
  struct Buffer {
    size_t bytes = 0;
    int first = -1, last = -1;  // steps that use it
    size_t offset = 0;
  };
  std::vector<Step> steps;
  std::vector<Buffer> buffers;
  size_t workspace_bytes = 0;
  memory::desc input_md, output_md;
};

namespace {

// The memory objects of one step's arguments, for a workspace at `base`.
std::unordered_map<int, memory> StepArgs(const PlannedGhostNet::Plan& plan,
                                         const PlannedGhostNet::Plan::Step& step, char* base,
                                         const memory& input, const memory& output) {
  std::unordered_map<int, memory> m;
  for (const auto& a : step.args) {
    switch (a.buffer) {
      case kInput:
        m.emplace(a.id, input);
        break;
      case kOutput:
        m.emplace(a.id, output);
        break;
      case kFixed:
        m.emplace(a.id, a.fixed);
        break;
      default:
        m.emplace(a.id, memory(a.md, CpuEngine(), base + plan.buffers[a.buffer].offset));
    }
  }
  return m;
}

}  // namespace

// One caller's activations and scratchpad, with the memory objects of the
// plans it has run bound to them (batch sizes vary from call to call in the
// service; binding a plan makes ~200 memory objects, so each binding is kept).
struct PlannedGhostNet::Workspace {
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  struct Binding {
    std::shared_ptr<const Plan> plan;
    std::vector<std::unordered_map<int, memory>> args;
    memory input, output;
  };
  static constexpr size_t kMaxBindings = 16;

  std::unique_ptr<void, FreeDeleter> data;
  size_t capacity = 0;
  std::vector<Binding> bindings;  // most recently used last

  bool Has(const Plan* plan) const {
    for (const auto& b : bindings) {
      if (b.plan.get() == plan) return true;
    }
    return false;
  }

  // The binding of `plan`, made if needed (growing the buffer drops them all).
  Binding& Bind(const std::shared_ptr<const Plan>& plan) {
    for (size_t i = 0; i < bindings.size(); ++i) {
      if (bindings[i].plan == plan) {
        std::rotate(bindings.begin() + i, bindings.begin() + i + 1, bindings.end());
        return bindings.back();
      }
    }
    if (capacity < plan->workspace_bytes) {
      bindings.clear();
      data.reset();
      capacity = 0;
      void* p = std::aligned_alloc(kAlign, AlignUp(std::max<size_t>(plan->workspace_bytes, 1)));
      if (p == nullptr) throw std::bad_alloc();
      data.reset(p);
      capacity = plan->workspace_bytes;
    }
    if (bindings.size() >= kMaxBindings) bindings.erase(bindings.begin());
    Binding b;
    b.plan = plan;
    char* base = static_cast<char*>(data.get());
    b.input = memory(plan->input_md, CpuEngine(), nullptr);
    b.output = memory(plan->output_md, CpuEngine(), nullptr);
    b.args.reserve(plan->steps.size());
    for (const auto& step : plan->steps) {
      b.args.push_back(StepArgs(*plan, step, base, b.input, b.output));
    }
    bindings.push_back(std::move(b));
    return bindings.back();
  }
};

namespace {

using Plan = PlannedGhostNet::Plan;

// Builds one Plan: primitives in execution order and the buffers they use.
class PlanBuilder {
 public:
  struct Region {
    int buffer;
    memory::desc md;
  };

  // dt: the data type of every map and of the weights (f32 or bf16); biases,
  // and the logits, stay f32. calibration (int8 only; dt is then ignored):
  // every map is u8 or s8 with the scale its writer's calibrated range gives,
  // and the squeeze-excite gates are f32.
  // tune: choose one or all threads per step by measurement (worth it only
  // for the smallest batches; otherwise every step runs on all threads).
  PlanBuilder(Dt dt, const Calibration* calibration, bool tune)
      : dt_(calibration != nullptr ? Dt::u8 : dt),
        gate_dt_(calibration != nullptr ? Dt::f32 : dt),
        calibration_(calibration),
        tune_(tune),
        threads_(omp_get_max_threads()) {
    plan_ = std::make_shared<Plan>();
    scratch_ = static_cast<int>(plan_->buffers.size());
    plan_->buffers.emplace_back();
  }

  bool int8() const { return calibration_ != nullptr; }

  // A new NHWC map of dims {n, c, h, w}.
  int Map(int64_t n, int64_t c, int64_t h, int64_t w) {
    return NewBuffer(memory::desc({n, c, h, w}, dt_, Tag::nhwc));
  }
  // A new [n, c] matrix; gate: a squeeze-excite gate (f32 in int8).
  int Matrix(int64_t n, int64_t c, bool gate = false) {
    return NewBuffer(memory::desc({n, c}, gate ? gate_dt_ : dt_, Tag::ab));
  }

  // The buffer as its last writer left it (data type included).
  Region Full(int buffer) const { return {buffer, mds_[buffer]}; }
  // Channels [begin, begin + count) of an NHWC map: a strided view.
  Region Channels(int buffer, int64_t begin, int64_t count) const {
    const memory::desc& full = mds_[buffer];
    memory::dims dims = full.dims();
    dims[1] = count;
    return {buffer, full.submemory_desc(dims, {0, begin, 0, 0})};
  }
  // A [n, c] matrix seen as an NHWC map {n, c, 1, 1} (the same bytes).
  Region AsMap(int buffer) const {
    const memory::dims d = mds_[buffer].dims();
    return {buffer, memory::desc({d[0], d[1], 1, 1}, mds_[buffer].data_type(), Tag::nhwc)};
  }

  void Conv(LayerWeights& l, const Region& src, const Region& dst, bool sum = false) {
    const memory::dims s = src.md.dims();
    const int64_t k = l.weight.size(2);
    const int64_t oh = (s[2] + 2 * l.padding - k) / l.stride + 1;
    const int64_t ow = (s[3] + 2 * l.padding - k) / l.stride + 1;
    TORCH_CHECK(dst.md.dims() == memory::dims({s[0], l.out_channels(), oh, ow}),
                "planned convolution: output dims mismatch");
    const Out out = Output(l.name, dst);
    Add(
        l.name,
        [&]() -> Made {
          dnnl::convolution_forward::desc d(
              dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src.md,
              memory::desc(l.dims, WeightDt(), Tag::any), l.bias_desc(), out.md,
              {l.stride, l.stride}, {l.padding, l.padding}, {l.padding, l.padding});
          dnnl::post_ops ops;
          if (sum) AppendSum(ops, dst, out);
          if (l.relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
          dnnl::convolution_forward::primitive_desc pd(d, WeightedAttr(ops, l, src, out),
                                                       CpuEngine());
          return {dnnl::convolution_forward(pd), pd.scratchpad_desc(),
                  {{DNNL_ARG_WEIGHTS, kFixed, {}, l.Packed(pd.weights_desc())}}};
        },
        WithBias(l, src, {{DNNL_ARG_SRC, src.buffer, src.md, {}},
                          {DNNL_ARG_DST, dst.buffer, out.md, {}}}));
    Wrote(dst, out);
  }

  void InnerProduct(LayerWeights& l, const Region& src, const Region& dst, bool hard_sigmoid,
                    bool sum = false) {
    const Out out = Output(l.name, dst, /*keep_type=*/sum, /*real=*/hard_sigmoid);
    Add(
        l.name,
        [&]() -> Made {
          dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src.md,
                                              memory::desc(l.dims, WeightDt(), Tag::any),
                                              l.bias_desc(), out.md);
          dnnl::post_ops ops;
          if (sum) AppendSum(ops, dst, out);
          if (l.relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
          if (hard_sigmoid) AppendHardSigmoid(ops);
          dnnl::inner_product_forward::primitive_desc pd(d, WeightedAttr(ops, l, src, out),
                                                         CpuEngine());
          return {dnnl::inner_product_forward(pd), pd.scratchpad_desc(),
                  {{DNNL_ARG_WEIGHTS, kFixed, {}, l.Packed(pd.weights_desc())}}};
        },
        WithBias(l, src, {{DNNL_ARG_SRC, src.buffer, src.md, {}},
                          {DNNL_ARG_DST, dst.buffer, out.md, {}}}));
    Wrote(dst, out);
  }

  // dst {n, c, 1, 1} = mean of src over its height and width (in int8 in
  // src's data type and scale).
  void GlobalAveragePool(const std::string& name, const Region& src, const Region& dst) {
    const Out out{Retyped(dst.md, src.md.data_type()), Scale(src)};
    Add(
        name,
        [&]() -> Made {
          const memory::dims s = src.md.dims();
          dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference,
                                        dnnl::algorithm::pooling_avg_exclude_padding, src.md,
                                        out.md, {1, 1}, {s[2], s[3]}, {0, 0}, {0, 0});
          dnnl::pooling_forward::primitive_desc pd(d, Attr({}), CpuEngine());
          return {dnnl::pooling_forward(pd), pd.scratchpad_desc(), {}};
        },
        {{DNNL_ARG_SRC, src.buffer, src.md, {}}, {DNNL_ARG_DST, dst.buffer, out.md, {}}});
    Wrote(dst, out);
  }

  // map *= gate, gate {n, c, 1, 1} broadcast over height and width.
  void ScaleChannels(const std::string& name, const Region& map, const Region& gate) {
    Binary(name, dnnl::algorithm::binary_mul, map, gate, map);
  }

  // dst = src0 + src1 (dst may be src0).
  void Sum(const std::string& name, const Region& src0, const Region& src1, const Region& dst) {
    Binary(name, dnnl::algorithm::binary_add, src0, src1, dst);
  }

  // dst = src in another layout or data type (in int8: quantized).
  void Reorder(const std::string& name, const Region& src, const Region& dst) {
    const Out out = Output(name, dst);
    Add(
        name,
        [&]() -> Made {
          dnnl::primitive_attr attr = Attr({});
          if (int8()) attr.set_output_scales(0, {Scale(src) / out.scale});
          dnnl::reorder::primitive_desc pd(CpuEngine(), src.md, CpuEngine(), out.md, attr);
          return {dnnl::reorder(pd), pd.scratchpad_desc(), {}};
        },
        {{DNNL_ARG_FROM, src.buffer, src.md, {}}, {DNNL_ARG_TO, dst.buffer, out.md, {}}});
    Wrote(dst, out);
  }

  // Lays out the buffers and returns the finished plan.
  std::shared_ptr<Plan> Finish(const memory::desc& input_md, const memory::desc& output_md) {
    auto& scratch = plan_->buffers[scratch_];
    scratch.bytes = AlignUp(max_scratch_);
    if (scratch.bytes > 0) {
      scratch.first = 0;
      scratch.last = static_cast<int>(plan_->steps.size());
    }
    plan_->input_md = input_md;
    plan_->output_md = output_md;
    plan_->workspace_bytes = LayOut(plan_->buffers);
    if (threads_ > 1 && tune_) Tune();
    return std::move(plan_);
  }

 private:
  // A step's output: its memory desc (data type chosen) and, in int8, the
  // real value of one unit.
  struct Out {
    memory::desc md;
    float scale = 1.f;
  };

  static memory::desc Retyped(const memory::desc& md, Dt dt) {
    if (md.data_type() == dt) return md;
    return memory::desc(md.dims(), dt, md.dims().size() == 4 ? Tag::nhwc : Tag::ab);
  }

  Dt WeightDt() const { return int8() ? Dt::s8 : dt_; }

  // The scale of what `r` holds now (1 outside int8, and for f32 data).
  float Scale(const Region& r) const {
    if (!int8() || r.buffer < 0 || r.md.data_type() == Dt::f32) return 1.f;
    return scales_[r.buffer];
  }

  // What step `name` writes to `dst`: outside int8, dst as it is; in int8,
  // u8 for a calibrated range that never goes below zero, s8 otherwise, with
  // the scale that maps the range onto it; f32 (real values) for the logits
  // and when `real`.
  // keep_type: a sum onto dst keeps dst's held type (oneDNN's int8 inner
  // product cannot sum onto another type).
  Out Output(const std::string& name, const Region& dst, bool keep_type = false,
             bool real = false) const {
    if (!int8()) return {dst.md, 1.f};
    if (real || dst.buffer == kOutput) return {Retyped(dst.md, Dt::f32), 1.f};
    auto it = calibration_->ranges.find(name);
    TORCH_CHECK(it != calibration_->ranges.end(), "the int8 calibration has no range for step '",
                name, "' (made for another version of the engine? run ghostserve-train calibrate)");
    const auto [lo, hi] = it->second;
    const bool unsigned_ = keep_type ? dst.md.data_type() == Dt::u8 : lo >= 0.f;
    const float amax = std::max(std::fabs(lo), std::fabs(hi));
    const float scale = amax > 0.f ? amax / (unsigned_ ? 255.f : 127.f) : 1.f;
    return {Retyped(dst.md, unsigned_ ? Dt::u8 : Dt::s8), scale};
  }

  // Records what a step left in dst's buffer.
  void Wrote(const Region& dst, const Out& out) {
    if (dst.buffer < 0) return;
    mds_[dst.buffer] = Retyped(mds_[dst.buffer], out.md.data_type());
    scales_[dst.buffer] = out.scale;
  }

  // The sum post-op onto what dst holds (in int8 its own type and scale).
  void AppendSum(dnnl::post_ops& ops, const Region& dst, const Out& out) const {
    if (!int8()) {
      ops.append_sum(1.f);
      return;
    }
    const Dt held = dst.md.data_type();
    ops.append_sum(Scale(dst) / out.scale, 0, held == out.md.data_type() ? Dt::undef : held);
  }

  // A convolution's or inner product's attributes: post-ops and, in int8,
  // per-output-channel scales taking the int32 sum to dst's units.
  dnnl::primitive_attr WeightedAttr(const dnnl::post_ops& ops, LayerWeights& l,
                                    const Region& src, const Out& out) {
    dnnl::primitive_attr attr = Attr(ops);
    if (int8()) {
      l.Quantize();
      std::vector<float> scales(l.wscale.size());
      const float s = Scale(src) / out.scale;
      for (size_t i = 0; i < scales.size(); ++i) scales[i] = s * l.wscale[i];
      attr.set_output_scales(1 << 1, scales);
    }
    return attr;
  }

  // The bias argument: in int8 oneDNN adds it to the int32 sum before the
  // output scale, so it is divided by the input's and the weights' scales.
  std::vector<Plan::Arg> WithBias(LayerWeights& l, const Region& src,
                                  std::vector<Plan::Arg> args) {
    if (!l.bias.defined()) return args;
    if (!int8()) {
      args.push_back({DNNL_ARG_BIAS, kFixed, {}, l.bias_mem});
      return args;
    }
    l.Quantize();
    memory bias(l.bias_mem.get_desc(), CpuEngine());
    const float* b = l.bias.data_ptr<float>();
    auto* q = static_cast<float*>(bias.get_data_handle());
    const float s = Scale(src);
    for (size_t i = 0; i < l.wscale.size(); ++i) q[i] = b[i] / (s * l.wscale[i]);
    args.push_back({DNNL_ARG_BIAS, kFixed, {}, bias});
    return args;
  }

  dnnl::primitive_attr Attr(const dnnl::post_ops& ops) {
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }

  int NewBuffer(const memory::desc& md) {
    mds_.resize(plan_->buffers.size());
    scales_.resize(plan_->buffers.size(), 1.f);
    mds_.push_back(md);
    scales_.push_back(1.f);
    Plan::Buffer b;
    b.bytes = AlignUp(md.get_size());
    plan_->buffers.push_back(b);
    return static_cast<int>(plan_->buffers.size()) - 1;
  }

  // In int8 the inputs are rescaled to dst's units (the gate of a multiply
  // is a real f32 factor).
  void Binary(const std::string& name, dnnl::algorithm alg, const Region& src0,
              const Region& src1, const Region& dst) {
    const Out out = Output(name, dst);
    Add(
        name,
        [&]() -> Made {
          dnnl::binary::desc d(alg, src0.md, src1.md, out.md);
          dnnl::primitive_attr attr = Attr({});
          if (int8()) {
            attr.set_scales(DNNL_ARG_SRC_0, 0, {Scale(src0) / out.scale});
            if (alg == dnnl::algorithm::binary_add) {
              attr.set_scales(DNNL_ARG_SRC_1, 0, {Scale(src1) / out.scale});
            }
          }
          dnnl::binary::primitive_desc pd(d, attr, CpuEngine());
          return {dnnl::binary(pd), pd.scratchpad_desc(), {}};
        },
        {{DNNL_ARG_SRC_0, src0.buffer, src0.md, {}},
         {DNNL_ARG_SRC_1, src1.buffer, src1.md, {}},
         {DNNL_ARG_DST, dst.buffer, out.md, {}}});
    Wrote(dst, out);
  }

  // A primitive as made for one thread count, with the arguments that
  // depend on it (packed weights).
  struct Made {
    dnnl::primitive primitive;
    memory::desc scratch;
    std::vector<Plan::Arg> args;
  };

  // Adds a step. oneDNN fixes a primitive's thread count when it is created
  // (from the creating thread's OpenMP setting), so with more than one thread
  // the step is made twice, for all threads and for one; Finish keeps the
  // faster.
  void Add(const std::string& name, const std::function<Made()>& make,
           const std::vector<Plan::Arg>& args) {
    const int step = static_cast<int>(plan_->steps.size());
    for (const auto& a : args) {
      if (a.buffer < 0) continue;
      auto& b = plan_->buffers[a.buffer];
      if (b.first < 0) b.first = step;
      b.last = step;
    }
    std::vector<Plan::Step> variants;
    auto add_variant = [&](int threads) {
      Made m;
      try {
        m = make();
      } catch (const dnnl::error& e) {
        TORCH_CHECK(false, "planned GhostNet: step ", name, ": ", e.what());
      }
      Plan::Step v{std::move(m.primitive), args, threads, name};
      v.args.insert(v.args.end(), m.args.begin(), m.args.end());
      if (m.scratch.get_size() > 0) {
        v.args.push_back({DNNL_ARG_SCRATCHPAD, scratch_, m.scratch, {}});
        max_scratch_ = std::max(max_scratch_, m.scratch.get_size());
      }
      variants.push_back(std::move(v));
    };
    add_variant(threads_);
    if (threads_ > 1 && tune_) {
      omp_set_num_threads(1);
      try {
        add_variant(1);
      } catch (...) {
        omp_set_num_threads(threads_);
        throw;
      }
      omp_set_num_threads(threads_);
    }
    plan_->steps.push_back(variants.front());
    variants_.push_back(std::move(variants));
  }

  // Gives each used buffer an offset so that buffers alive at the same step
  // never share bytes: largest first, each at the lowest offset that fits.
  // Returns the workspace size.
  static size_t LayOut(std::vector<Plan::Buffer>& buffers) {
    std::vector<size_t> order;
    for (size_t i = 0; i < buffers.size(); ++i) {
      if (buffers[i].first >= 0 && buffers[i].bytes > 0) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return buffers[a].bytes > buffers[b].bytes; });
    std::vector<size_t> placed;
    size_t total = 0;
    for (size_t i : order) {
      Plan::Buffer& b = buffers[i];
      std::vector<size_t> candidates = {0};
      for (size_t j : placed) candidates.push_back(buffers[j].offset + buffers[j].bytes);
      std::sort(candidates.begin(), candidates.end());
      for (size_t offset : candidates) {
        bool fits = true;
        for (size_t j : placed) {
          const Plan::Buffer& o = buffers[j];
          const bool live_together = !(o.last < b.first || b.last < o.first);
          const bool overlap = offset < o.offset + o.bytes && o.offset < offset + b.bytes;
          if (live_together && overlap) {
            fits = false;
            break;
          }
        }
        if (fits) {
          b.offset = offset;
          break;
        }
      }
      placed.push_back(i);
      total = std::max(total, b.offset + b.bytes);
    }
    return total;
  }

  // Runs every variant of every step a few times on a zeroed workspace and
  // keeps the fastest. At batch 1 most of GhostNet's primitives are too small
  // for two threads to pay for their barrier (ghostnet_050 on 2 EPYC cores:
  // 2.7 ms of primitive time with 2 threads, 2.4 with 1, 2.1 choosing per
  // step); the large early maps and the classifier still gain from all.
  void Tune() {
    std::unique_ptr<void, void (*)(void*)> data(
        std::aligned_alloc(kAlign, AlignUp(std::max<size_t>(plan_->workspace_bytes, 1))),
        std::free);
    if (data == nullptr) throw std::bad_alloc();
    std::memset(data.get(), 0, plan_->workspace_bytes);
    memory input(plan_->input_md, CpuEngine());
    memory output(plan_->output_md, CpuEngine());
    std::memset(input.get_data_handle(), 0, plan_->input_md.get_size());
    char* base = static_cast<char*>(data.get());
    dnnl::stream stream(CpuEngine());
    // Each variant's median of 5 runs; one thread must win by 15% to be
    // chosen (isolated runs favour it: the step's data stays in one core's
    // cache).
    auto median_seconds = [&](const Plan::Step& v) {
      omp_set_num_threads(v.threads);
      const auto args = StepArgs(*plan_, v, base, input, output);
      v.primitive.execute(stream, args);  // first run: page faults, caches
      stream.wait();
      std::array<double, 5> t{};
      for (double& seconds : t) {
        const auto t0 = std::chrono::steady_clock::now();
        v.primitive.execute(stream, args);
        stream.wait();
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      std::nth_element(t.begin(), t.begin() + 2, t.end());
      return t[2];
    };
    for (size_t i = 0; i < plan_->steps.size(); ++i) {
      const auto& variants = variants_[i];
      if (variants.size() < 2) continue;
      const double all = median_seconds(variants[0]);
      const double one = median_seconds(variants[1]);
      if (one < 0.85 * all) plan_->steps[i] = variants[1];
    }
    omp_set_num_threads(threads_);
  }

  Dt dt_;       // of maps and matrices (u8 in int8, changed per step)
  Dt gate_dt_;  // of squeeze-excite gates
  const Calibration* calibration_;
  bool tune_;
  int threads_;  // the creating thread's OpenMP team size
  std::vector<std::vector<Plan::Step>> variants_;  // per step: all threads, one thread
  std::shared_ptr<Plan> plan_;
  std::vector<memory::desc> mds_;  // per buffer, as its last writer left it
  std::vector<float> scales_;      // per buffer, int8: its last writer's scale
  int scratch_ = 0;
  size_t max_scratch_ = 0;
};

}  // namespace

PlannedGhostNet::PlannedGhostNet(const InferenceGhostNet::Layers& layers,
                                 const GhostNetOptions& options, Precision precision,
                                 bool tune_threads, const Calibration* calibration)
    : options_(options),
      precision_(precision),
      tune_threads_(tune_threads),
      calibration_(calibration != nullptr ? std::make_unique<Calibration>(*calibration) : nullptr),
      weights_(std::make_unique<PackedWeights>()) {
  TORCH_CHECK(precision != Precision::kInt8 || calibration_ != nullptr,
              "planned GhostNet: int8 needs a calibration");
  PackedWeights& w = *weights_;
  auto half = [](int64_t channels) { return (channels + 1) / 2; };
  const int64_t stem_c = layers.stem.weight.size(0);
  w.stem_split = half(stem_c);
  w.stem[0] = w.AddConv("stem.0", layers.stem, {0, w.stem_split, 0, -1, true, true});
  w.stem[1] = w.AddConv("stem.1", layers.stem, {w.stem_split, -1, 0, -1, true, true});
  int64_t split = w.stem_split, channels = stem_c;
  for (size_t i = 0; i < layers.blocks.size(); ++i) {
    const auto& b = layers.blocks[i];
    const std::string p = "blocks." + std::to_string(i) + ".";
    PackedWeights::Block pb;
    pb.in_split = split;
    pb.in = channels;
    pb.mid = b.ghost1.out_channels;
    pb.h1 = b.ghost1.primary.weight.size(0);
    pb.out = b.ghost2.out_channels;
    pb.h2 = b.ghost2.primary.weight.size(0);
    const int64_t r1 = pb.mid - pb.h1, r2 = pb.out - pb.h2;
    w.SplitInput(p + "ghost1.primary", b.ghost1.primary, split, 0, -1, pb.g1_primary);
    pb.g1_cheap =
        w.AddConv(p + "ghost1.cheap", b.ghost1.cheap, {0, r1, 0, -1, true, b.ghost1.cheap.relu});
    if (b.has_dw) {
      pb.dw[0] = w.AddConv(p + "dw.0", b.dw, {0, pb.h1, 0, -1, true, false});
      pb.dw[1] = w.AddConv(p + "dw.1", b.dw, {pb.h1, r1, 0, -1, true, false});
    }
    if (b.has_se) {
      pb.se_reduce[0] = w.AddLinear(p + "se.reduce.in0", b.se_reduce.weight, b.se_reduce.bias,
                                    {0, -1, 0, pb.h1, true, false});
      pb.se_reduce[1] = w.AddLinear(p + "se.reduce.in1", b.se_reduce.weight, b.se_reduce.bias,
                                    {0, -1, pb.h1, -1, false, true});
      pb.se_expand[0] = w.AddLinear(p + "se.expand.0", b.se_expand.weight, b.se_expand.bias,
                                    {0, pb.h1, 0, -1, true, false});
      pb.se_expand[1] = w.AddLinear(p + "se.expand.1", b.se_expand.weight, b.se_expand.bias,
                                    {pb.h1, r1, 0, -1, true, false});
    }
    w.SplitInput(p + "ghost2.primary", b.ghost2.primary, pb.h1, 0, -1, pb.g2_primary);
    pb.g2_cheap = w.AddConv(p + "ghost2.cheap", b.ghost2.cheap, {0, r2, 0, -1, true, false});
    if (b.has_shortcut) {
      pb.shortcut_dw[0] = w.AddConv(p + "shortcut.dw.0", b.shortcut_dw, {0, split, 0, -1, true, false});
      pb.shortcut_dw[1] = w.AddConv(p + "shortcut.dw.1", b.shortcut_dw, {split, -1, 0, -1, true, false});
      w.SplitInput(p + "shortcut.pw.0", b.shortcut_pw, split, 0, pb.h2, pb.shortcut_pw[0]);
      w.SplitInput(p + "shortcut.pw.1", b.shortcut_pw, split, pb.h2, r2, pb.shortcut_pw[1]);
    } else {
      TORCH_CHECK(split == pb.h2 && channels == pb.out,
                  "planned GhostNet: identity shortcut with mismatched halves");
    }
    w.blocks.push_back(pb);
    split = pb.h2;
    channels = pb.out;
  }
  w.SplitInput("final_conv", layers.final_conv, split, 0, -1, w.final_conv);
  w.head = w.AddLinear("head", layers.head.weight, layers.head.bias,
                       {0, -1, 0, -1, true, layers.head.relu});
  w.classifier = w.AddLinear("classifier", layers.classifier.weight, layers.classifier.bias, {});
  // The plan a lone request at the nominal size uses (the service's input is
  // channels-last), built now: the first request does not pay for it, and the
  // weights are packed before WeightBytes is first read.
  GetPlan(Key{1, options.input_size, options.input_size, true, omp_get_max_threads()});
}

PlannedGhostNet::~PlannedGhostNet() = default;

Calibration PlannedGhostNet::Calibrate(const std::vector<torch::Tensor>& batches) const {
  TORCH_CHECK(precision_ == Precision::kFp32, "planned GhostNet: calibration runs in fp32");
  Calibration cal;
  std::map<Key, std::shared_ptr<const Plan>> plans;
  Workspace ws;
  dnnl::stream stream(CpuEngine());
  for (const torch::Tensor& batch : batches) {
    torch::Tensor x = batch.to(torch::kFloat);
    const bool nhwc = x.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (!nhwc && !x.is_contiguous()) x = x.contiguous();
    const Key key{x.size(0), x.size(2), x.size(3), nhwc, omp_get_max_threads()};
    auto& plan = plans[key];
    if (plan == nullptr) {
      std::lock_guard<std::mutex> build(build_mu_);
      plan = BuildPlan(key, /*calibrating=*/true);
    }
    Workspace::Binding& bound = ws.Bind(plan);
    torch::Tensor logits = torch::empty({x.size(0), options_.num_classes}, torch::kFloat);
    bound.input.set_data_handle(x.data_ptr());
    bound.output.set_data_handle(logits.data_ptr());
    for (size_t i = 0; i < plan->steps.size(); ++i) {
      const Plan::Step& step = plan->steps[i];
      step.primitive.execute(stream, bound.args[i]);
      stream.wait();
      for (const auto& a : step.args) {
        if ((a.id != DNNL_ARG_DST && a.id != DNNL_ARG_TO) || a.buffer < 0) continue;
        TORCH_CHECK(a.md.data_type() == Dt::f32, "calibration reads f32 maps");
        const auto* v = static_cast<const float*>(bound.args[i].at(a.id).get_data_handle());
        const size_t count = a.md.get_size() / sizeof(float);
        const auto [lo, hi] = std::minmax_element(v, v + count);
        auto [it, fresh] = cal.ranges.emplace(step.name, std::make_pair(*lo, *hi));
        if (!fresh) {
          it->second.first = std::min(it->second.first, *lo);
          it->second.second = std::max(it->second.second, *hi);
        }
      }
    }
    cal.images += x.size(0);
  }
  return cal;
}

int64_t PlannedGhostNet::PackedWeightBytes() const {
  std::lock_guard<std::mutex> lock(build_mu_);
  int64_t bytes = 0;
  for (const auto& l : weights_->all) {
    for (const auto& [md, mem] : l->packed) bytes += static_cast<int64_t>(md.get_size());
  }
  return bytes;
}

int64_t PlannedGhostNet::WorkspaceBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t bytes = 0;
  for (const auto& ws : idle_) bytes += static_cast<int64_t>(ws->capacity);
  return bytes;
}

std::shared_ptr<const PlannedGhostNet::Plan> PlannedGhostNet::GetPlan(const Key& key) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(key);
    if (it != plans_.end()) {
      it->second.second = ++plan_clock_;
      return it->second.first;
    }
  }
  // Built outside mu_, so calls whose plans exist are not held up by a build
  // (50-450 ms); builds are serialised by build_mu_, which also guards the
  // packed-weights cache.
  std::shared_ptr<const Plan> plan;
  {
    std::lock_guard<std::mutex> build(build_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = plans_.find(key);
      if (it != plans_.end()) return it->second.first;  // built meanwhile
    }
    plan = BuildPlan(key);
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Input sizes other than the served ones are rare (the service resizes to
  // input_size; only the batch varies), but the model accepts any: bound the
  // cache, dropping the least recently used plan.
  constexpr size_t kMaxPlans = 64;
  if (plans_.size() >= kMaxPlans) {
    auto oldest = plans_.begin();
    for (auto i = plans_.begin(); i != plans_.end(); ++i) {
      if (i->second.second < oldest->second.second) oldest = i;
    }
    plans_.erase(oldest);
  }
  plans_.emplace(key, std::make_pair(plan, ++plan_clock_));
  return plan;
}

std::shared_ptr<const PlannedGhostNet::Plan> PlannedGhostNet::BuildPlan(const Key& key,
                                                                        bool calibrating) const {
  const auto [n, h, w, nhwc, threads] = key;
  (void)threads;  // the builder reads the calling thread's OpenMP setting itself
  const int64_t c = options_.in_channels;
  PackedWeights& pw = *weights_;
  PlanBuilder b(precision_ == Precision::kBf16 ? Dt::bf16 : Dt::f32,
                calibrating ? nullptr : calibration_.get(),
                tune_threads_ && n <= 2 && !calibrating);
  const memory::desc input_md({n, c, h, w}, Dt::f32, nhwc ? Tag::nhwc : Tag::nchw);
  const memory::desc output_md({n, options_.num_classes}, Dt::f32, Tag::ab);

  // oneDNN's fast convolution kernels take NHWC (or blocked) maps only, so
  // an NCHW input is reordered first; in bf16 and int8 the reorder also
  // converts (calibration measures its range).
  PlanBuilder::Region in{kInput, input_md};
  if (!nhwc || precision_ != Precision::kFp32 || calibrating) {
    const int nhwc_in = b.Map(n, c, h, w);
    b.Reorder("input", in, b.Full(nhwc_in));
    in = b.Full(nhwc_in);
  }
  auto out_side = [](int64_t side, const LayerWeights& l) {
    return (side + 2 * l.padding - l.weight.size(2)) / l.stride + 1;
  };
  int64_t hh = out_side(h, *pw.stem[0]), ww = out_side(w, *pw.stem[0]);
  // Every map from here on is two dense halves (see PackedWeights).
  std::array<int, 2> x = {b.Map(n, pw.stem[0]->out_channels(), hh, ww),
                          b.Map(n, pw.stem[1]->out_channels(), hh, ww)};
  b.Conv(*pw.stem[0], in, b.Full(x[0]));
  b.Conv(*pw.stem[1], in, b.Full(x[1]));
  // dst = layer(two-half src): the first half's primitive writes (with the
  // bias), the second's sums onto it (then applies the ReLU).
  auto split_conv = [&](LayerWeights* const parts[2], const std::array<int, 2>& src, int dst) {
    b.Conv(*parts[0], b.Full(src[0]), b.Full(dst));
    b.Conv(*parts[1], b.Full(src[1]), b.Full(dst), /*sum=*/true);
  };
  for (size_t bi = 0; bi < pw.blocks.size(); ++bi) {
    const auto& blk = pw.blocks[bi];
    const std::string p = "blocks." + std::to_string(bi) + ".";
    const int64_t r1 = blk.mid - blk.h1, r2 = blk.out - blk.h2;
    // Ghost module 1: primary half, then the cheap half computed from it.
    std::array<int, 2> y = {b.Map(n, blk.h1, hh, ww), b.Map(n, r1, hh, ww)};
    split_conv(blk.g1_primary, x, y[0]);
    b.Conv(*blk.g1_cheap, blk.h1 == r1 ? b.Full(y[0]) : b.Channels(y[0], 0, r1), b.Full(y[1]));
    int64_t h2s = hh, w2s = ww;
    if (blk.dw[0] != nullptr) {
      h2s = out_side(hh, *blk.dw[0]);
      w2s = out_side(ww, *blk.dw[0]);
      std::array<int, 2> d = {b.Map(n, blk.h1, h2s, w2s), b.Map(n, r1, h2s, w2s)};
      b.Conv(*blk.dw[0], b.Full(y[0]), b.Full(d[0]));
      b.Conv(*blk.dw[1], b.Full(y[1]), b.Full(d[1]));
      y = d;
    }
    if (blk.se_reduce[0] != nullptr) {
      std::array<int, 2> pooled = {b.Matrix(n, blk.h1), b.Matrix(n, r1)};
      b.GlobalAveragePool(p + "se.pool.0", b.Full(y[0]), b.AsMap(pooled[0]));
      b.GlobalAveragePool(p + "se.pool.1", b.Full(y[1]), b.AsMap(pooled[1]));
      const int reduced = b.Matrix(n, blk.se_reduce[0]->out_channels());
      b.InnerProduct(*blk.se_reduce[0], b.Full(pooled[0]), b.Full(reduced), false);
      b.InnerProduct(*blk.se_reduce[1], b.Full(pooled[1]), b.Full(reduced), false, /*sum=*/true);
      for (int i = 0; i < 2; ++i) {
        const int gate = b.Matrix(n, i == 0 ? blk.h1 : r1, /*gate=*/true);
        b.InnerProduct(*blk.se_expand[i], b.Full(reduced), b.Full(gate), /*hard_sigmoid=*/true);
        b.ScaleChannels(p + "se.scale." + std::to_string(i), b.Full(y[i]), b.AsMap(gate));
      }
    }
    // The residual, in the output's halves: the block input itself (its last
    // use, so the sums below are taken in place) or the shortcut's depthwise
    // + pointwise convolutions.
    std::array<int, 2> out = x;
    if (blk.shortcut_dw[0] != nullptr) {
      std::array<int, 2> s = {b.Map(n, blk.in_split, h2s, w2s),
                              b.Map(n, blk.in - blk.in_split, h2s, w2s)};
      b.Conv(*blk.shortcut_dw[0], b.Full(x[0]), b.Full(s[0]));
      b.Conv(*blk.shortcut_dw[1], b.Full(x[1]), b.Full(s[1]));
      out = {b.Map(n, blk.h2, h2s, w2s), b.Map(n, r2, h2s, w2s)};
      split_conv(blk.shortcut_pw[0], s, out[0]);
      split_conv(blk.shortcut_pw[1], s, out[1]);
    }
    // Ghost module 2 (no ReLU) onto the residual: the cheap half sums into
    // the second half directly; the primary half, which the cheap half reads,
    // is added to the first half afterwards.
    const int t = b.Map(n, blk.h2, h2s, w2s);
    split_conv(blk.g2_primary, y, t);
    b.Conv(*blk.g2_cheap, blk.h2 == r2 ? b.Full(t) : b.Channels(t, 0, r2), b.Full(out[1]),
           /*sum=*/true);
    b.Sum(p + "residual", b.Full(out[0]), b.Full(t), b.Full(out[0]));
    x = out;
    hh = h2s;
    ww = w2s;
  }
  const int f = b.Map(n, pw.final_conv[0]->out_channels(), hh, ww);
  split_conv(pw.final_conv, x, f);
  const int pooled = b.Matrix(n, pw.final_conv[0]->out_channels());
  b.GlobalAveragePool("pool", b.Full(f), b.AsMap(pooled));
  const int head = b.Matrix(n, pw.head->out_channels());
  b.InnerProduct(*pw.head, b.Full(pooled), b.Full(head), false);
  b.InnerProduct(*pw.classifier, b.Full(head), {kOutput, output_md},
                 false);

  return b.Finish(input_md, output_md);
}

std::unique_ptr<PlannedGhostNet::Workspace> PlannedGhostNet::TakeWorkspace(
    const Plan* plan) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.empty()) return std::make_unique<Workspace>();
  // One that has run this plan before, else the most recently returned.
  auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                         [plan](const std::unique_ptr<Workspace>& w) { return w->Has(plan); });
  auto pick = it == idle_.rend() ? idle_.end() - 1 : std::next(it).base();
  auto ws = std::move(*pick);
  idle_.erase(pick);
  return ws;
}

void PlannedGhostNet::ReturnWorkspace(std::unique_ptr<Workspace> ws) const {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(std::move(ws));
}

torch::Tensor PlannedGhostNet::Forward(const torch::Tensor& input) const {
  torch::Tensor x = input.scalar_type() == torch::kFloat ? input : input.to(torch::kFloat);
  // Channels-last first: a one-channel map is both, and needs no reorder.
  bool nhwc = x.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (!nhwc && !x.is_contiguous()) x = x.contiguous();
  // oneDNN fixes a primitive's thread count when it is made, so a plan
  // serves callers with the OpenMP team size it was made for.
  const int threads = omp_get_max_threads();
  const Key key{x.size(0), x.size(2), x.size(3), nhwc, threads};
  std::shared_ptr<const Plan> plan = GetPlan(key);

  std::unique_ptr<Workspace> ws = TakeWorkspace(plan.get());
  struct Return {
    const PlannedGhostNet* self;
    std::unique_ptr<Workspace>& ws;
    ~Return() { self->ReturnWorkspace(std::move(ws)); }
  } give_back{this, ws};
  Workspace::Binding& bound = ws->Bind(plan);

  torch::Tensor logits = torch::empty({x.size(0), options_.num_classes}, torch::kFloat);
  bound.input.set_data_handle(x.data_ptr());
  bound.output.set_data_handle(logits.data_ptr());
  dnnl::stream stream(CpuEngine());
  int current = threads;
  struct RestoreThreads {
    const int& current;
    int threads;
    ~RestoreThreads() {
      if (current != threads) omp_set_num_threads(threads);
    }
  } restore{current, threads};
  for (size_t i = 0; i < plan->steps.size(); ++i) {
    const Plan::Step& step = plan->steps[i];
    if (step.threads != current) {
      omp_set_num_threads(step.threads);
      current = step.threads;
    }
    step.primitive.execute(stream, bound.args[i]);
  }
  stream.wait();
  return logits;
}

}  // namespace ghostserve::model
