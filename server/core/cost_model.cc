#include "server/core/cost_model.h"

#include <algorithm>
#include <cstdlib>

namespace ghostserve::core {
namespace {

// Weight of a new observation: 1/4.
int64_t Blend(int64_t old, int64_t sample) { return old == 0 ? sample : (3 * old + sample) / 4; }

}  // namespace

CostModel::Format CostModel::FormatOf(std::string_view b) {
  if (b.size() >= 2 && static_cast<unsigned char>(b[0]) == 0xFF &&
      static_cast<unsigned char>(b[1]) == 0xD8) {
    return Format::kJpeg;
  }
  if (b.size() >= 4 && static_cast<unsigned char>(b[0]) == 0x89 && b[1] == 'P' && b[2] == 'N' &&
      b[3] == 'G') {
    return Format::kPng;
  }
  return Format::kOther;
}

CostModel::CostModel(int max_batch)
    : max_batch_(max_batch), batch_us_(new std::atomic<int64_t>[max_batch + 1]) {
  for (int i = 0; i <= max_batch; ++i) batch_us_[i] = 0;
}

void CostModel::ObserveBatch(int n, int64_t us) {
  if (n < 1 || n > max_batch_ || us < 0) return;
  batch_us_[n] = Blend(batch_us_[n].load(), std::max<int64_t>(us, 1));
}

int64_t CostModel::BatchUs(int n) const {
  n = std::clamp(n, 1, max_batch_);
  if (const int64_t at = batch_us_[n].load(); at > 0) return at;
  // The nearest observed size, scaled linearly: an over-estimate above it
  // (batches grow sub-linearly), an under-estimate below.
  for (int d = 1; d < max_batch_; ++d) {
    for (int m : {n - d, n + d}) {
      if (m < 1 || m > max_batch_) continue;
      if (const int64_t at = batch_us_[m].load(); at > 0) return at * n / m;
    }
  }
  return 0;
}

void CostModel::ObservePreprocess(Format format, int64_t bytes, int64_t us) {
  const int f = static_cast<int>(format);
  // Split into a per-KiB cost and what is left as a fixed cost, so small
  // and large images both predict sensibly.
  const int64_t kib = std::max<int64_t>(bytes / 1024, 1);
  ns_per_kib_[f] = Blend(ns_per_kib_[f].load(), us * 1000 / kib / 2);
  fixed_us_[f] = Blend(fixed_us_[f].load(), std::max<int64_t>(us / 2, 1));
}

int64_t CostModel::PreprocessUs(Format format, int64_t bytes) const {
  const int f = static_cast<int>(format);
  return fixed_us_[f].load() + ns_per_kib_[f].load() * (bytes / 1024) / 1000;
}

}  // namespace ghostserve::core
