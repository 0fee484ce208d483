// A GhostNet compiled for CPU inference.
//
// Built once from a trained GhostNet: every BatchNorm is folded into the
// convolution before it (so BN costs nothing at run time). By default Forward
// runs the planned engine (planned_ghostnet.h): oneDNN primitives built once
// per input shape, in fp32 or bf16. The previous engine, ATen kernels called
// per call on channels-last weights, stays available (planned = false).
//
// Thread-safe: several threads may call Forward at once; each call uses the
// calling thread's OpenMP team (LibTorch's intra-op pool).
#ifndef GHOSTSERVE_MODEL_INFERENCE_H_
#define GHOSTSERVE_MODEL_INFERENCE_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "model/calibration.h"
#include "model/ghostnet.h"
#include "model/precision.h"

namespace ghostserve::model {

struct InferenceOptions {
  // Run the forward as oneDNN primitives planned once per input shape
  // (planned_ghostnet.h): weights packed once, ReLU / residual / gate fused,
  // activations in one planned workspace. false runs ATen ops per call (the
  // two fields below), kept as a reference and for comparison.
  bool planned = true;
  // The number format (planned engine only for anything but fp32). Create
  // refuses a precision this CPU does not run natively.
  Precision precision = Precision::kFp32;
  // int8 only (required): the activation ranges, measured with Calibrate on
  // these same weights (Create checks the fingerprint).
  std::shared_ptr<const Calibration> calibration;
  // Planned engine, batches of 1 and 2, more than one thread: run each step
  // on one thread or all, whichever measured faster when its plan was built
  // (ghostnet_050, batch 1, 2 EPYC cores: 378 -> 538 img/s, medians of 5).
  bool tune_threads = true;
  // ATen path only: keep activations channels-last (NHWC). Measured faster
  // with oneDNN here.
  bool channels_last = true;
  // ATen path only: route every convolution to oneDNN, bypassing ATen's size
  // heuristic that sends small batch-1 convolutions to the slow im2col path.
  bool force_onednn = true;
};

class PlannedGhostNet;

class InferenceGhostNet {
 public:
  // `net` is only read during the call; the result owns copies of all weights.
  static absl::StatusOr<std::unique_ptr<InferenceGhostNet>> Create(
      const GhostNetImpl& net, const InferenceOptions& options = {});

  // x: [N, in_channels, H, W] float32, any memory format, H and W >= 32;
  // channels-last input skips a layout copy. Returns logits [N, num_classes]
  // float32. Runs under InferenceMode. InvalidArgument for a misshapen input,
  // Internal if LibTorch throws (no exception leaves this call).
  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& x) const;

  // Bytes held by the compiled weights (the folded weights, plus the copies
  // reordered for oneDNN when planned).
  int64_t WeightBytes() const;

  // Bytes of activation workspace the planned engine keeps between calls
  // (one per concurrent caller seen, each sized for the largest batch it
  // ran); 0 for the ATen engine.
  int64_t WorkspaceBytes() const;

  const InferenceOptions& options() const { return options_; }

  // A hash of the folded weights and architecture (hex), which a Calibration
  // records so that it is never applied to other weights.
  std::string WeightsFingerprint() const;

  // Runs `batches` ([N, C, H, W] float32 each, already preprocessed) through
  // the fp32 planned engine and records every step's output range: the
  // calibration an int8 model of these weights needs. FailedPrecondition
  // unless this model is planned fp32; InvalidArgument for a misshapen batch.
  absl::StatusOr<Calibration> Calibrate(const std::vector<torch::Tensor>& batches) const;

  struct Conv {
    torch::Tensor weight;  // BN folded in
    torch::Tensor bias;
    int64_t stride = 1;
    int64_t padding = 0;
    int64_t groups = 1;
    bool relu = false;
  };
  struct Linear {
    torch::Tensor weight;  // [out, in]
    torch::Tensor bias;
  };
  struct Ghost {
    Conv primary, cheap;
    int64_t out_channels;
  };
  struct Bottleneck {
    Ghost ghost1;
    bool has_dw = false;
    Conv dw;                   // conv_dw, BN folded in
    Conv dw_first, dw_second;  // dw split at the Ghost module's halves (ATen path)
    bool has_se = false;
    Linear se_reduce, se_expand;  // 1x1 convolutions on the pooled map
    Ghost ghost2;
    bool has_shortcut = false;
    Conv shortcut_dw, shortcut_pw;
  };
  struct Layers {
    Conv stem;
    std::vector<Bottleneck> blocks;
    Conv final_conv;
    Conv head;  // conv_head: 1x1 on the pooled map, with ReLU
    Linear classifier;
  };

  ~InferenceGhostNet();

 private:
  InferenceGhostNet(GhostNetOptions net_options, InferenceOptions options);

  // Calls f on every folded weight and bias (undefined ones too), in layer
  // order; aten_slices adds the ATen engine's copies of split layers.
  void ForEachWeight(const std::function<void(const torch::Tensor&)>& f, bool aten_slices) const;
  torch::Tensor ForwardUnchecked(const torch::Tensor& x) const;
  torch::Tensor RunConv(const Conv& c, const torch::Tensor& x) const;
  // The Ghost module's two halves (primary, cheap); concatenated they are its
  // output.
  std::pair<torch::Tensor, torch::Tensor> RunGhostHalves(const Ghost& g,
                                                         const torch::Tensor& x) const;
  torch::Tensor RunGhost(const Ghost& g, const torch::Tensor& x) const;
  torch::Tensor RunBottleneck(const Bottleneck& b, const torch::Tensor& x) const;

  GhostNetOptions net_options_;
  InferenceOptions options_;
  Layers layers_;
  std::unique_ptr<PlannedGhostNet> planned_;  // when options_.planned
};

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_INFERENCE_H_
