// Dynamic batching for one model.
#ifndef GHOSTSERVE_SERVER_BATCHER_BATCHER_H_
#define GHOSTSERVE_SERVER_BATCHER_BATCHER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/batcher/clock.h"

namespace ghostserve::batcher {

// A unit of work the batcher groups with others. Subclasses carry the input
// and the way to answer the caller.
class BatchTask {
 public:
  virtual ~BatchTask() = default;

  // Absolute deadline on the batcher's clock; 0 = none. A task whose deadline
  // has passed when its batch is formed is failed with DEADLINE_EXCEEDED and
  // never reaches the model.
  int64_t deadline_us = 0;
  // Set by the batcher when the task is accepted.
  int64_t enqueue_us = 0;

  // Tasks of different groups never share a batch (a batch is a run of
  // consecutive same-group tasks). The serving core groups images that were
  // preprocessed into rows of the same batch tensor. -1 = no group.
  virtual int64_t group() const { return -1; }
  // True when the caller has gone away; such tasks are dropped (failed with
  // CANCELLED) instead of run. Must be thread-safe.
  virtual bool IsCancelled() const { return false; }
  // Called at most once, from a batcher thread, for a task that will not be
  // run (deadline passed, cancelled). Must not block.
  virtual void Fail(const absl::Status& status) = 0;
};

struct BatcherOptions {
  // A batch leaves as soon as it holds this many tasks. >= 1.
  int max_batch_size = 8;
  // ...or when its oldest task has waited this long, in microseconds. >= 0.
  int64_t max_delay_us = 2000;
  // Tasks waiting for a batch (not counting batches already running). When
  // full, Submit refuses at once. >= 1.
  int max_queue_size = 256;
  // Threads that run batches. Each runs one batch at a time. >= 1.
  int num_workers = 1;
  // Name used in thread-facing messages.
  std::string name = "model";

  absl::Status Validate() const;
};

// Runs one batch: called on a worker thread with 1..max_batch_size tasks in
// arrival order. Must answer every task exactly once and must not throw.
using ProcessBatchFn = std::function<void(std::vector<std::unique_ptr<BatchTask>>)>;

// Optional hint: returns true while more tasks are on their way (for example,
// images still being decoded). When it returns false a partial batch leaves at
// once instead of waiting out max_delay, since waiting could not grow it.
// Must be thread-safe and cheap.
using MoreComingFn = std::function<bool()>;

// Groups tasks for one model into batches of at most max_batch_size and runs
// them on worker threads it owns. A batch leaves when full, when its oldest
// task has waited max_delay, or (with a MoreComingFn) as soon as no further
// task is on its way. Thread-safe; Submit never blocks.
// StopAccepting makes Submit refuse (draining); the destructor also refuses
// new tasks, runs the queued ones, and joins the workers.
class Batcher {
 public:
  // `clock` is borrowed and must outlive the batcher. `on_worker_start` runs
  // first on each worker thread (e.g. to set LibTorch's per-thread settings).
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(
      const BatcherOptions& options, Clock* clock, ProcessBatchFn process,
      std::function<void()> on_worker_start = nullptr, MoreComingFn more_coming = nullptr);
  ~Batcher();

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Takes ownership of *task and sets it to null on success. On failure
  // (UNAVAILABLE: queue full, or draining) *task is left with the caller.
  absl::Status Submit(std::unique_ptr<BatchTask>* task);

  // Refuse new tasks from now on; queued tasks still run.
  void StopAccepting();
  // Wakes the workers so they re-check MoreComingFn (call when it may have
  // turned false without a Submit, e.g. an image failed to decode).
  void Poke();

  // Tasks waiting for a batch.
  int QueueDepth() const;
  // Tasks waiting plus tasks in running batches.
  int Outstanding() const;

  const BatcherOptions& options() const { return options_; }

 private:
  Batcher(const BatcherOptions& options, Clock* clock, ProcessBatchFn process,
          MoreComingFn more_coming);
  void WorkerLoop(const std::function<void()>& on_start);

  const BatcherOptions options_;
  Clock* const clock_;
  const ProcessBatchFn process_;
  const MoreComingFn more_coming_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<BatchTask>> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace ghostserve::batcher

#endif  // GHOSTSERVE_SERVER_BATCHER_BATCHER_H_
