// What work costs, learned online from the servable's own batches and
// decodes, for deadline-aware admission and batching.
#ifndef GHOSTSERVE_SERVER_CORE_COST_MODEL_H_
#define GHOSTSERVE_SERVER_CORE_COST_MODEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

namespace ghostserve::core {

// Thread-safe (atomics; an update racing another may be lost, which only
// slows learning). Costs are exponentially weighted moving averages.
class CostModel {
 public:
  enum class Format { kJpeg = 0, kPng = 1, kOther = 2 };
  static Format FormatOf(std::string_view encoded);

  explicit CostModel(int max_batch);

  void ObserveBatch(int n, int64_t us);
  // Predicted forward time of a batch of n (1..max_batch): the average at n,
  // else the nearest observed size scaled linearly; 0 before any batch.
  int64_t BatchUs(int n) const;

  void ObservePreprocess(Format format, int64_t bytes, int64_t us);
  // Predicted decode + preprocess time of one image; 0 before any of its
  // format was seen.
  int64_t PreprocessUs(Format format, int64_t bytes) const;

 private:
  const int max_batch_;
  // [n] for n in 1..max_batch; 0 = not observed.
  std::unique_ptr<std::atomic<int64_t>[]> batch_us_;
  // Per format: fixed cost (us) and cost per KiB (ns).
  std::atomic<int64_t> fixed_us_[3] = {};
  std::atomic<int64_t> ns_per_kib_[3] = {};
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_COST_MODEL_H_
