// GhostNet's forward as a fixed sequence of oneDNN primitives, built once per
// input shape.
//
// LibTorch's own convolution entry point (at::mkldnn_convolution) rebuilds a
// oneDNN primitive descriptor and reorders the weights into oneDNN's blocked
// layout on every call. On a 2-core EPYC at batch 1 that overhead was 60% of
// ghostnet_100's forward time: the convolutions themselves took 2.2 of
// 8.4 ms, weight reorders another 1.2 ms. This engine does that work once:
//
//   - weights are reordered into the layout each primitive asks for when the
//     model is compiled (shared by all plans that ask for the same layout);
//   - per input shape (batch, height, width, input layout) a Plan holds the
//     primitives, with ReLU, the residual add and the squeeze-excite gate fused
//     as post-ops, and a memory plan: every activation is an offset into one
//     workspace, buffers whose lifetimes do not overlap share bytes, and the
//     Ghost modules' two halves are written straight into channel ranges of
//     one map, so there is no concatenation;
//   - each call takes a workspace from a pool (one per concurrent caller),
//     runs the steps on a oneDNN stream and returns the logits.
//
// The oneDNN library is the one LibTorch itself links (Debian's libtorch
// links libdnnl.so.2, 2.6.3), so kernels, ISA dispatch (AVX2, AVX-512, AMX;
// ONEDNN_MAX_CPU_ISA) and the OpenMP pool are LibTorch's.
//
// Thread-safe: Forward may run on several threads at once; each call uses the
// calling thread's OpenMP team (omp_get_max_threads of that thread).
#ifndef GHOSTSERVE_MODEL_PLANNED_GHOSTNET_H_
#define GHOSTSERVE_MODEL_PLANNED_GHOSTNET_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "model/calibration.h"
#include "model/inference.h"
#include "model/precision.h"

namespace ghostserve::model {

class PlannedGhostNet {
 public:
  // `layers` is only read during the call: the weights are copied (sliced,
  // then packed) into this object.
  // In bf16 the weights and every activation are bfloat16 (the input is
  // converted by the first step); accumulation, biases and the logits are
  // float32. The caller checks the CPU supports `precision`. tune_threads:
  // for batches of 1 and 2, measure each step with one thread and with all
  // when its plan is built and keep the faster (see InferenceOptions).
  // Throws dnnl::error or c10::Error on failure.
  // In int8 `calibration` (required, only read during the call) gives the
  // range of every step's output; see calibration.h.
  PlannedGhostNet(const InferenceGhostNet::Layers& layers, const GhostNetOptions& options,
                  Precision precision, bool tune_threads, const Calibration* calibration);
  ~PlannedGhostNet();

  // x: [N, in_channels, H, W] float32, contiguous or channels-last contiguous
  // (anything else is made contiguous first). Returns [N, num_classes]
  // float32. Throws on failure.
  torch::Tensor Forward(const torch::Tensor& x) const;

  // fp32 only: runs the batches step by step and records the smallest and
  // largest value each step writes (the fingerprint is left to the caller).
  Calibration Calibrate(const std::vector<torch::Tensor>& batches) const;

  // Bytes of the weights reordered for oneDNN (all layouts held).
  int64_t PackedWeightBytes() const;
  // Bytes held by idle workspaces (activations + scratchpad), for memory
  // accounting.
  int64_t WorkspaceBytes() const;

  struct Plan;
  struct Workspace;
  struct PackedWeights;

 private:
  // N, H, W, NHWC input, the caller's OpenMP team size.
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, int>;

  // The plan for `key`, built if missing (outside mu_, under build_mu_).
  std::shared_ptr<const Plan> GetPlan(const Key& key) const;
  // Builds (and, at batch 1-2, tunes) one plan; build_mu_ held. calibrating:
  // an fp32 plan for Calibrate (input always reordered, as int8 plans do; no
  // tuning).
  std::shared_ptr<const Plan> BuildPlan(const Key& key, bool calibrating = false) const;
  // An idle workspace, preferring one that has run `plan`; a new one if none.
  std::unique_ptr<Workspace> TakeWorkspace(const Plan* plan) const;
  void ReturnWorkspace(std::unique_ptr<Workspace> ws) const;

  GhostNetOptions options_;
  Precision precision_;
  bool tune_threads_;
  std::unique_ptr<const Calibration> calibration_;  // int8 only
  std::unique_ptr<PackedWeights> weights_;

  // Held while a plan is built; guards weights_' packed-layout caches.
  mutable std::mutex build_mu_;
  // Guards plans_, plan_clock_ and idle_ (held briefly).
  mutable std::mutex mu_;
  // Plans by key, with the clock of their last use.
  mutable std::map<Key, std::pair<std::shared_ptr<const Plan>, uint64_t>> plans_;
  mutable uint64_t plan_clock_ = 0;
  mutable std::vector<std::unique_ptr<Workspace>> idle_;
};

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_PLANNED_GHOSTNET_H_
