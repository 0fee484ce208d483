#include "server/core/request.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace ghostserve::core {

std::vector<double> Softmax(const float* logits, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  if (n == 0) return out;
  const double max = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += out[i] = std::exp(static_cast<double>(logits[i]) - max);
  for (double& v : out) v /= sum;
  return out;
}

std::vector<Prediction> TopK(const float* logits, int64_t num_classes, int64_t k,
                             const std::vector<std::string>& labels) {
  const std::vector<double> probs = Softmax(logits, num_classes);
  k = std::clamp<int64_t>(k, 0, num_classes);
  std::vector<int64_t> order(static_cast<size_t>(num_classes));
  std::iota(order.begin(), order.end(), 0);
  // Ranked by logit, not probability: far from the best class the softmax
  // underflows to 0 and would rank by index (seen with an untrained model's
  // logits of 1e6).
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  std::vector<Prediction> out;
  out.reserve(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    const int64_t idx = order[i];
    std::string label = idx < static_cast<int64_t>(labels.size()) ? labels[static_cast<size_t>(idx)]
                                                                  : absl::StrCat("class_", idx);
    out.push_back({idx, std::move(label), static_cast<float>(probs[idx])});
  }
  return out;
}

}  // namespace ghostserve::core
