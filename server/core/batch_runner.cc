#include "server/core/batch_runner.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/call_state.h"

namespace ghostserve::core {
namespace {

// True when the tasks (sorted by row) occupy consecutive rows of one slab.
bool Consecutive(const std::vector<std::unique_ptr<ImageTask>>& tasks) {
  const SlabRow& first = tasks.front()->row;
  for (size_t i = 1; i < tasks.size(); ++i) {
    const SlabRow& r = tasks[i]->row;
    if (r.slab != first.slab || r.index != first.index + static_cast<int>(i)) return false;
  }
  return true;
}

}  // namespace

void RunBatch(Servable& servable, std::vector<std::unique_ptr<ImageTask>> tasks,
              batcher::Clock& clock) {
  const int n = static_cast<int>(tasks.size());
  metrics::ModelMetrics* metrics = servable.metrics();
  if (metrics != nullptr) metrics->queue_depth->Set(servable.batcher().QueueDepth());
  std::sort(tasks.begin(), tasks.end(),
            [](const auto& a, const auto& b) { return a->row.index < b->row.index; });
  const int64_t start = clock.NowMicros();
  const int64_t classes = servable.num_classes();
  const std::vector<int64_t> shape = servable.input_shape();
  std::vector<float> logits;
  absl::Status status;
  try {
    const float* images = tasks.front()->row.data();
    std::unique_ptr<Slab> gathered;
    if (!Consecutive(tasks)) {
      // A dropped image in the middle of a slab: copy the rest together.
      const int64_t floats = servable.image_floats();
      gathered = std::make_unique<Slab>(n, floats, -1);
      for (int i = 0; i < n; ++i) {
        std::memcpy(gathered->row(i), tasks[static_cast<size_t>(i)]->row.data(),
                    static_cast<size_t>(floats) * sizeof(float));
      }
      images = gathered->row(0);
    }
    logits.resize(static_cast<size_t>(n * classes));
    status = servable.model().Forward(images, n, shape[1], shape[2], logits.data());
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("batch failed: ", e.what()));
  }
  const int64_t end = clock.NowMicros();
  if (status.ok()) {
    servable.costs().ObserveBatch(n, end - start);
    servable.stats().BatchRan(n, end - start);
  }
  if (metrics != nullptr) {
    metrics->inference_seconds->Observe((end - start) * 1e-6);
    metrics->batch_size->Observe(n);
  }
  for (int i = 0; i < n; ++i) {
    ImageTask& task = *tasks[static_cast<size_t>(i)];
    if (!status.ok()) {
      task.Fail(status);
      continue;
    }
    const int64_t queue_us = start - task.ready_us;
    if (metrics != nullptr) metrics->queue_seconds->Observe(queue_us * 1e-6);
    Timing timing;
    timing.preprocess_wait_us = task.preprocess_wait_us;
    timing.preprocess_us = task.preprocess_us;
    timing.queue_us = queue_us;
    timing.inference_us = end - start;
    task.call->ImageSucceeded(task.index, logits.data() + i * classes, n, timing);
  }
}

}  // namespace ghostserve::core
