#include "server/core/slab.h"

#include <cstring>
#include <new>

namespace ghostserve::core {

Slab::Slab(int rows, int64_t row_floats, int64_t id)
    : rows_(rows), row_floats_(row_floats), id_(id) {
  constexpr size_t kAlign = 64;
  size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(row_floats) * sizeof(float);
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;  // aligned_alloc wants a multiple
  data_.reset(static_cast<float*>(std::aligned_alloc(kAlign, bytes == 0 ? kAlign : bytes)));
  if (data_ == nullptr) throw std::bad_alloc();
}

SlabRow SlabAllocator::Reserve() {
  std::lock_guard<std::mutex> lock(mu_);
  if (current_ == nullptr || next_row_ == rows_) {
    current_ = std::make_shared<Slab>(rows_, row_floats_, next_id_++);
    next_row_ = 0;
  }
  return {current_, next_row_++};
}

void CopyChwToHwc(const void* src, int64_t channels, int64_t pixels, float* dst) {
  // memcpy per value: a protobuf string's bytes need not be float-aligned.
  const char* in = static_cast<const char*>(src);
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t p = 0; p < pixels; ++p) {
      std::memcpy(dst + p * channels + c, in + (c * pixels + p) * sizeof(float), sizeof(float));
    }
  }
}

}  // namespace ghostserve::core
