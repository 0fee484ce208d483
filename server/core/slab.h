// Batch buffers. Preprocessing writes each image straight into a row of a
// slab, a [rows, H, W, C] float buffer; a batch of consecutive rows of one
// slab runs without any copy.
#ifndef GHOSTSERVE_SERVER_CORE_SLAB_H_
#define GHOSTSERVE_SERVER_CORE_SLAB_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace ghostserve::core {

// `rows` images of `row_floats` floats each, one after another, the first
// 64-byte aligned. Not thread-safe itself: each row has one writer.
class Slab {
 public:
  Slab(int rows, int64_t row_floats, int64_t id);
  float* row(int i) const { return data_.get() + i * row_floats_; }
  int rows() const { return rows_; }
  int64_t row_floats() const { return row_floats_; }
  // Distinguishes slabs of one allocator (the batcher's task group).
  int64_t id() const { return id_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  const int rows_;
  const int64_t row_floats_;
  const int64_t id_;
  std::unique_ptr<float, Free> data_;
};

// A reserved row; keeps its slab alive.
struct SlabRow {
  std::shared_ptr<Slab> slab;
  int index = -1;
  float* data() const { return slab->row(index); }
};

// Hands out rows in order, starting a new slab when the current one is used
// up. Thread-safe.
class SlabAllocator {
 public:
  SlabAllocator(int rows, int64_t row_floats) : rows_(rows), row_floats_(row_floats) {}
  SlabRow Reserve();

 private:
  const int rows_;
  const int64_t row_floats_;
  std::mutex mu_;
  std::shared_ptr<Slab> current_ ABSL_GUARDED_BY(mu_);
  int next_row_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
};

// Copies a [channels, pixels] float image (`src`, any alignment) into
// [pixels, channels] order at `dst`.
void CopyChwToHwc(const void* src, int64_t channels, int64_t pixels, float* dst);

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_SLAB_H_
