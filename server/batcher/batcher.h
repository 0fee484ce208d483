// Dynamic batching for one model.
#ifndef GHOSTSERVE_SERVER_BATCHER_BATCHER_H_
#define GHOSTSERVE_SERVER_BATCHER_BATCHER_H_

#include <algorithm>
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
#include "absl/strings/str_cat.h"
#include "server/batcher/clock.h"

namespace ghostserve::batcher {

// The fields and defaults every task type needs; a task type derives from it
// (or declares the same members) and adds its input, the way to answer its
// caller, and
//
//   void Fail(const absl::Status& status);
//
// which the batcher calls at most once, from a batcher thread, for a task
// that will not be run (deadline passed, cancelled, refused while draining).
// Fail must not block. The batcher is a template over the task type, so it
// hands batches back typed and nobody downcasts.
struct BatchTask {
  // Absolute deadline on the batcher's clock; 0 = none. A task whose deadline
  // has passed when its batch is formed is failed with DEADLINE_EXCEEDED and
  // never reaches the model.
  int64_t deadline_us = 0;
  // Set by the batcher when the task is accepted.
  int64_t enqueue_us = 0;
  // 0 = normal, 1 = high: queued ahead of every normal task (FIFO within a
  // level).
  int priority = 0;

  // Tasks of different groups never share a batch (a batch is a run of
  // consecutive same-group tasks). The serving core groups images that were
  // preprocessed into rows of the same batch buffer. -1 = no group.
  int64_t group() const { return -1; }
  // True when the caller has gone away; such tasks are dropped (failed with
  // CANCELLED) instead of run. Must be thread-safe.
  bool IsCancelled() const { return false; }
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
  // Optional: predicted run time of a batch of n tasks, in microseconds. When
  // set, a partial batch also leaves as soon as waiting longer would make
  // the earliest deadline among its tasks unreachable.
  std::function<int64_t(int n)> predict_batch_us;

  absl::Status Validate() const;
};

// Runs one batch: called on a worker thread with 1..max_batch_size tasks in
// arrival order. Must answer every task exactly once and must not throw.
template <typename Task>
using ProcessBatchFn = std::function<void(std::vector<std::unique_ptr<Task>>)>;

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
template <typename Task>
class Batcher {
 public:
  // `clock` is borrowed and must outlive the batcher. `on_worker_start` runs
  // first on each worker thread (e.g. to set LibTorch's per-thread settings).
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(
      const BatcherOptions& options, Clock* clock, ProcessBatchFn<Task> process,
      std::function<void()> on_worker_start = nullptr, MoreComingFn more_coming = nullptr);
  ~Batcher();

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Takes ownership of *task and sets it to null on success. On failure
  // (UNAVAILABLE: queue full, or draining) *task is left with the caller.
  absl::Status Submit(std::unique_ptr<Task>* task);

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
  Batcher(const BatcherOptions& options, Clock* clock, ProcessBatchFn<Task> process,
          MoreComingFn more_coming);
  void WorkerLoop(const std::function<void()>& on_start);
  // When the batch at the front must leave: its oldest task's max delay, or
  // earlier if its earliest deadline needs it (predict_batch_us).
  int64_t DueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BatcherOptions options_;
  Clock* const clock_;
  const ProcessBatchFn<Task> process_;
  const MoreComingFn more_coming_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // High-priority tasks first (the first high_count_), then normal ones.
  std::deque<std::unique_ptr<Task>> queue_ ABSL_GUARDED_BY(mu_);
  size_t high_count_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// Implementation.

template <typename Task>
absl::StatusOr<std::unique_ptr<Batcher<Task>>> Batcher<Task>::Create(
    const BatcherOptions& options, Clock* clock, ProcessBatchFn<Task> process,
    std::function<void()> on_worker_start, MoreComingFn more_coming) {
  if (auto s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr || !process) {
    return absl::InvalidArgumentError("batcher needs a clock and a process function");
  }
  std::unique_ptr<Batcher<Task>> b(
      new Batcher(options, clock, std::move(process), std::move(more_coming)));
  for (int i = 0; i < options.num_workers; ++i) {
    b->workers_.emplace_back(
        [raw = b.get(), on_worker_start] { raw->WorkerLoop(on_worker_start); });
  }
  return b;
}

template <typename Task>
Batcher<Task>::Batcher(const BatcherOptions& options, Clock* clock, ProcessBatchFn<Task> process,
                       MoreComingFn more_coming)
    : options_(options),
      clock_(clock),
      process_(std::move(process)),
      more_coming_(std::move(more_coming)) {}

template <typename Task>
Batcher<Task>::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

template <typename Task>
absl::Status Batcher<Task>::Submit(std::unique_ptr<Task>* task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      return absl::UnavailableError(
          absl::StrCat("model ", options_.name, " is draining; retry on another replica"));
    }
    if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
      return absl::UnavailableError(absl::StrCat("model ", options_.name, " queue is full (",
                                                 options_.max_queue_size,
                                                 " waiting); retry later"));
    }
    (*task)->enqueue_us = clock_->NowMicros();
    if ((*task)->priority > 0) {
      queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(high_count_++), std::move(*task));
    } else {
      queue_.push_back(std::move(*task));
    }
  }
  cv_.notify_one();
  return absl::OkStatus();
}

template <typename Task>
void Batcher<Task>::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

template <typename Task>
void Batcher<Task>::Poke() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
}

template <typename Task>
int Batcher<Task>::QueueDepth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

template <typename Task>
int Batcher<Task>::Outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size()) + running_;
}

template <typename Task>
int64_t Batcher<Task>::DueLocked() const {
  // Each level is FIFO, so the oldest task heads one of them.
  int64_t oldest = queue_.front()->enqueue_us;
  if (high_count_ > 0 && high_count_ < queue_.size()) {
    oldest = std::min(oldest, queue_[high_count_]->enqueue_us);
  }
  int64_t due = oldest + options_.max_delay_us;
  if (options_.predict_batch_us) {
    const size_t n = std::min(queue_.size(), static_cast<size_t>(options_.max_batch_size));
    int64_t earliest = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t d = queue_[i]->deadline_us;
      if (d != 0 && (earliest == 0 || d < earliest)) earliest = d;
    }
    if (earliest != 0) {
      due = std::min(due, earliest - options_.predict_batch_us(static_cast<int>(n)));
    }
  }
  return due;
}

template <typename Task>
void Batcher<Task>::WorkerLoop(const std::function<void()>& on_start) {
  if (on_start) on_start();
  const size_t max_batch = static_cast<size_t>(options_.max_batch_size);
  while (true) {
    std::vector<std::unique_ptr<Task>> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        if (queue_.empty()) {
          if (stop_) return;
          cv_.wait(lock);
          continue;
        }
        // Full batch, shutting down, the oldest task has waited long enough,
        // a deadline would be missed by waiting longer, or nothing else is
        // on its way: take a batch now.
        const int64_t due = DueLocked();
        if (queue_.size() >= max_batch || stop_ || clock_->NowMicros() >= due) break;
        if (more_coming_ && !more_coming_()) break;
        clock_->WaitUntil(lock, cv_, due);
      }
      const int64_t group = queue_.front()->group();
      while (!queue_.empty() && batch.size() < max_batch && queue_.front()->group() == group) {
        if (high_count_ > 0) --high_count_;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      running_ += static_cast<int>(batch.size());
    }
    // Another worker may form the next batch while this one runs.
    cv_.notify_one();

    const int64_t now = clock_->NowMicros();
    const int taken = static_cast<int>(batch.size());
    std::vector<std::unique_ptr<Task>> live;
    live.reserve(batch.size());
    for (auto& task : batch) {
      if (task->IsCancelled()) {
        task->Fail(absl::CancelledError("request cancelled while queued"));
      } else if (task->deadline_us != 0 && task->deadline_us <= now) {
        task->Fail(absl::DeadlineExceededError(
            absl::StrCat("deadline passed after ", now - task->enqueue_us,
                         "us in the queue of model ", options_.name)));
      } else {
        live.push_back(std::move(task));
      }
    }
    if (!live.empty()) process_(std::move(live));
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ -= taken;
    }
  }
}

}  // namespace ghostserve::batcher

#endif  // GHOSTSERVE_SERVER_BATCHER_BATCHER_H_
