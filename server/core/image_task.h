// One image waiting for, or running in, a batch: the batcher's task type.
#ifndef GHOSTSERVE_SERVER_CORE_IMAGE_TASK_H_
#define GHOSTSERVE_SERVER_CORE_IMAGE_TASK_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "server/batcher/batcher.h"
#include "server/core/slab.h"

namespace ghostserve::core {

class CallState;

struct ImageTask : batcher::BatchTask {
  std::shared_ptr<CallState> call;
  // Position of the image in its request.
  int index = 0;
  // Where the preprocessed image is; keeps the slab alive until answered.
  SlabRow row;
  int64_t preprocess_wait_us = 0;
  int64_t preprocess_us = 0;
  // When the image was ready for a batch (preprocessing ended): its queue
  // time runs from here, so the timing parts add up to the total without a
  // gap before the batcher's own enqueue stamp.
  int64_t ready_us = 0;

  // Images in rows of one slab may share a batch.
  int64_t group() const { return row.slab->id(); }
  // Defined in call_state.cc.
  bool IsCancelled() const;
  void Fail(const absl::Status& status);
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_IMAGE_TASK_H_
