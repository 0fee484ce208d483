// What a front-end (gRPC Classify, KServe v2, REST) hands the core and what it
// gets back. Plain data: no LibTorch, no protobuf. The conversions from and to
// each protocol live next to its handlers (server/service/*_conversion.h).
#ifndef GHOSTSERVE_SERVER_CORE_REQUEST_H_
#define GHOSTSERVE_SERVER_CORE_REQUEST_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ghostserve::core {

// A float32 tensor someone else owns, contiguous in the order of `shape`
// and holding all of its values. `data` need not be aligned.
struct TensorView {
  const void* data = nullptr;
  std::vector<int64_t> shape;
};

struct InferRequest {
  std::string model;
  // Empty: the latest version served.
  std::string version;
  // The images, either encoded (JPEG, PNG, ...; the core decodes and
  // preprocesses them) or as one preprocessed float tensor [N, C, H, W]
  // (used when tensor.data is set). Borrowed until the callback has run.
  std::vector<std::string_view> encoded;
  TensorView tensor;
  // Absolute, on the core's clock; 0 = no deadline.
  int64_t deadline_us = 0;
  // Polled before preprocessing and before batching; may be null. Must be
  // thread-safe and stay callable until the callback has run.
  std::function<bool()> is_cancelled;
  // Predictions per image in the result: 0 = none, kTopKDefault = the five
  // best (all classes if fewer), otherwise exactly top_k (InvalidArgument
  // when the model has fewer classes).
  int64_t top_k = 0;
  static constexpr int64_t kTopKDefault = -1;
  // 1 = high: batched ahead of every normal (0) image of the same model.
  int priority = 0;

  int64_t images() const {
    return tensor.data != nullptr ? (tensor.shape.empty() ? 0 : tensor.shape[0])
                                  : static_cast<int64_t>(encoded.size());
  }
};

// Microseconds. For several images, the largest over them.
struct Timing {
  // Accepted, waiting for a preprocessing thread.
  int64_t preprocess_wait_us = 0;
  int64_t preprocess_us = 0;
  int64_t queue_us = 0;
  int64_t inference_us = 0;
  int64_t total_us = 0;
};

struct Prediction {
  int64_t class_index = 0;
  std::string label;
  float score = 0;  // softmax probability
};

struct InferResult {
  // The servable that answered.
  std::string model;
  int64_t version = 0;
  int64_t num_classes = 0;
  // [images, num_classes], row-major.
  std::vector<float> logits;
  // One list per image, best first; empty unless the request asked for top_k.
  std::vector<std::vector<Prediction>> predictions;
  // Size of the batch the first image ran in.
  int batch_size = 0;
  Timing timing;

  int64_t images() const { return num_classes == 0 ? 0 : logits.size() / num_classes; }
  const float* row(int64_t i) const { return logits.data() + i * num_classes; }
};

using InferDone = std::function<void(absl::StatusOr<InferResult>)>;

// Softmax of `n` logits, computed in double.
std::vector<double> Softmax(const float* logits, int64_t n);

// The k classes with the highest softmax score, best first (ties: lower index
// first). Labels come from `labels`, or "class_<index>" past its end.
std::vector<Prediction> TopK(const float* logits, int64_t num_classes, int64_t k,
                             const std::vector<std::string>& labels);

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_REQUEST_H_
