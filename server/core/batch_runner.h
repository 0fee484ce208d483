// Runs one formed batch of a servable: lays its images out as one
// [n, H, W, C] block, calls Model::Forward, hands each image its logits row
// and records the batch's metrics. Runs on an executor thread.
#ifndef GHOSTSERVE_SERVER_CORE_BATCH_RUNNER_H_
#define GHOSTSERVE_SERVER_CORE_BATCH_RUNNER_H_

#include <memory>
#include <vector>

#include "server/batcher/clock.h"
#include "server/core/image_task.h"
#include "server/core/servable.h"

namespace ghostserve::core {

// Answers every task exactly once. Images in consecutive rows of one slab
// (the usual case) run on that slab without a copy; others are gathered.
void RunBatch(Servable& servable, std::vector<std::unique_ptr<ImageTask>> tasks,
              batcher::Clock& clock);

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_BATCH_RUNNER_H_
