#include "server/batcher/batcher.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ghostserve::batcher {

absl::Status BatcherOptions::Validate() const {
  if (max_batch_size < 1 || max_batch_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch size must be in [1, 1024], got ", max_batch_size));
  }
  if (max_delay_us < 0 || max_delay_us > 10'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch delay must be in [0, 10s], got ", max_delay_us, "us"));
  }
  if (max_queue_size < 1 || max_queue_size > 1'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queue size must be in [1, 1000000], got ", max_queue_size));
  }
  if (num_workers < 1 || num_workers > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch workers must be in [1, 64], got ", num_workers));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const BatcherOptions& options,
                                                         Clock* clock, ProcessBatchFn process,
                                                         std::function<void()> on_worker_start,
                                                         MoreComingFn more_coming) {
  if (auto s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr || !process) {
    return absl::InvalidArgumentError("batcher needs a clock and a process function");
  }
  std::unique_ptr<Batcher> b(
      new Batcher(options, clock, std::move(process), std::move(more_coming)));
  for (int i = 0; i < options.num_workers; ++i) {
    b->workers_.emplace_back(
        [raw = b.get(), on_worker_start] { raw->WorkerLoop(on_worker_start); });
  }
  return b;
}

Batcher::Batcher(const BatcherOptions& options, Clock* clock, ProcessBatchFn process,
                 MoreComingFn more_coming)
    : options_(options),
      clock_(clock),
      process_(std::move(process)),
      more_coming_(std::move(more_coming)) {}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

absl::Status Batcher::Submit(std::unique_ptr<BatchTask>* task) {
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
    queue_.push_back(std::move(*task));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void Batcher::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

void Batcher::Poke() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
}

int Batcher::QueueDepth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

int Batcher::Outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size()) + running_;
}

void Batcher::WorkerLoop(const std::function<void()>& on_start) {
  if (on_start) on_start();
  const size_t max_batch = static_cast<size_t>(options_.max_batch_size);
  while (true) {
    std::vector<std::unique_ptr<BatchTask>> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        if (queue_.empty()) {
          if (stop_) return;
          cv_.wait(lock);
          continue;
        }
        // Full batch, shutting down, the oldest task has waited long enough,
        // or nothing else is on its way: take a batch now.
        const int64_t due = queue_.front()->enqueue_us + options_.max_delay_us;
        if (queue_.size() >= max_batch || stop_ || clock_->NowMicros() >= due) break;
        if (more_coming_ && !more_coming_()) break;
        clock_->WaitUntil(lock, cv_, due);
      }
      const int64_t group = queue_.front()->group();
      while (!queue_.empty() && batch.size() < max_batch && queue_.front()->group() == group) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      running_ += static_cast<int>(batch.size());
    }
    // Another worker may form the next batch while this one runs.
    cv_.notify_one();

    const int64_t now = clock_->NowMicros();
    const int taken = static_cast<int>(batch.size());
    std::vector<std::unique_ptr<BatchTask>> live;
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
