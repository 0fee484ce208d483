#include "server/core/call_state.h"

#include <prometheus/gauge.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

namespace ghostserve::core {

void InflightTracker::Begin() {
  count_.fetch_add(1);
  if (gauge_ != nullptr) gauge_->Increment();
}

void InflightTracker::Answering() {
  if (gauge_ != nullptr) gauge_->Decrement();
}

void InflightTracker::End() {
  if (count_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_cv_.notify_all();
  }
}

bool InflightTracker::WaitIdle(int64_t timeout_us) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::microseconds(timeout_us),
                           [this] { return count_.load() == 0; });
}

CallState::CallState(ServableUse servable, AdmissionTicket ticket, InferDone done,
                     std::function<bool()> is_cancelled, int images, int64_t top_k, int priority,
                     int64_t start_us, int64_t deadline_us, batcher::Clock* clock,
                     InflightTracker* inflight)
    : servable_(std::move(servable)),
      ticket_(std::move(ticket)),
      done_(std::move(done)),
      is_cancelled_(std::move(is_cancelled)),
      top_k_(top_k),
      priority_(priority),
      start_us_(start_us),
      deadline_us_(deadline_us),
      clock_(clock),
      inflight_(inflight),
      remaining_(images),
      logits_(static_cast<size_t>(images * servable_->num_classes())) {}

void CallState::ImageFailed(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = status;
  }
  ImageDone();
}

void CallState::ImageSucceeded(int index, const float* logits, int batch_size,
                               const Timing& timing) {
  const int64_t classes = servable_->num_classes();
  std::memcpy(logits_.data() + index * classes, logits, classes * sizeof(float));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (batch_size_ == 0) batch_size_ = batch_size;
    timing_.preprocess_wait_us = std::max(timing_.preprocess_wait_us, timing.preprocess_wait_us);
    timing_.preprocess_us = std::max(timing_.preprocess_us, timing.preprocess_us);
    timing_.queue_us = std::max(timing_.queue_us, timing.queue_us);
    timing_.inference_us = std::max(timing_.inference_us, timing.inference_us);
  }
  ImageDone();
}

void CallState::ImageDone() {
  if (remaining_.fetch_sub(1) != 1) return;
  absl::Status error;
  InferResult result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error = error_;
    result.batch_size = batch_size_;
    result.timing = timing_;
  }
  InferDone done = std::move(done_);
  if (error.ok()) {
    const Servable& s = *servable_.get();
    result.model = s.name();
    result.version = s.version();
    result.num_classes = s.num_classes();
    result.logits = std::move(logits_);
    if (top_k_ != 0) {
      const int64_t k =
          top_k_ == InferRequest::kTopKDefault ? std::min<int64_t>(5, result.num_classes) : top_k_;
      for (int64_t i = 0; i < result.images(); ++i) {
        result.predictions.push_back(TopK(result.row(i), result.num_classes, k, s.labels()));
      }
    }
  }
  result.timing.total_us = clock_->NowMicros() - start_us_;
  if (error.ok()) {
    const auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    servable_->stats().RequestSucceeded(result.timing, static_cast<uint64_t>(wall_ms));
  } else {
    servable_->stats().RequestFailed(result.timing.total_us);
  }
  ticket_.Release();
  inflight_->Answering();
  if (error.ok()) {
    done(std::move(result));
  } else {
    done(error);
  }
  inflight_->End();
}

bool ImageTask::IsCancelled() const { return call->CallerGone(); }

void ImageTask::Fail(const absl::Status& status) { call->ImageFailed(status); }

}  // namespace ghostserve::core
