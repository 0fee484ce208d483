// A core::Model for the serving core's tests: no LibTorch, no sleeps.
//
// Image i's logit j is (the image's first value) + j, so a test can tell each
// request got its own row. A test can hold every Forward at a gate, make the
// next Forward fail, and give each Forward a latency that advances a
// FakeClock instead of taking real time. It records every batch size.
#ifndef GHOSTSERVE_TESTS_FAKES_FAKE_MODEL_H_
#define GHOSTSERVE_TESTS_FAKES_FAKE_MODEL_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/core/model.h"
#include "tests/fakes/fake_clock.h"

namespace ghostserve::core {

// Shared between a test and the FakeModel it hands to the core (the core owns
// the model). Thread-safe.
class FakeModelControl {
 public:
  // Generous bound for events that should happen promptly; only reached when
  // the feature under test is broken.
  static constexpr std::chrono::seconds kEventTimeout{10};

  // Forward calls wait at the gate while it is closed.
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void FailNext(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_next_ = std::move(status);
  }
  // Each Forward advances `clock` by `us` (simulated compute time).
  void SetLatency(batcher::FakeClock* clock, int64_t us) {
    std::lock_guard<std::mutex> lock(mu_);
    clock_ = clock;
    latency_us_ = us;
  }

  // The intra-op threads the core's executor_threads hook gave the calling
  // thread (a stand-in for OpenMP's count; 0 = never set).
  static int& Threads() {
    thread_local int threads = 0;
    return threads;
  }
  // A Forward on a thread given more than one thread advances the clock by
  // `us` instead of SetLatency's figure.
  void SetMultiThreadLatency(int64_t us) {
    std::lock_guard<std::mutex> lock(mu_);
    multi_thread_latency_us_ = us;
  }
  // Threads() of every Forward, in run order (including warm-up).
  std::vector<int> forward_threads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return forward_threads_;
  }

  // Waits until `n` Forward calls have started (including warm-up).
  bool WaitForStarted(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kEventTimeout, [&] { return started_ >= n; });
  }
  std::vector<int> batch_sizes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batch_sizes_;
  }
  // The first value of the first image of every batch, in run order.
  std::vector<float> batch_firsts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batch_firsts_;
  }
  int started() const {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }

  absl::Status Run(const float* images, int n, int64_t image_floats, int64_t classes,
                   float* logits) {
    std::unique_lock<std::mutex> lock(mu_);
    ++started_;
    batch_sizes_.push_back(n);
    batch_firsts_.push_back(images[0]);
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
    forward_threads_.push_back(Threads());
    if (clock_ != nullptr) {
      clock_->Advance(Threads() > 1 && multi_thread_latency_us_ >= 0 ? multi_thread_latency_us_
                                                                     : latency_us_);
    }
    if (!fail_next_.ok()) return std::exchange(fail_next_, absl::OkStatus());
    for (int i = 0; i < n; ++i) {
      for (int64_t j = 0; j < classes; ++j) {
        logits[i * classes + j] = images[i * image_floats] + static_cast<float>(j);
      }
    }
    return absl::OkStatus();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  absl::Status fail_next_;
  batcher::FakeClock* clock_ = nullptr;
  int64_t latency_us_ = 0;
  int64_t multi_thread_latency_us_ = -1;
  std::vector<int> forward_threads_;
  int started_ = 0;
  std::vector<int> batch_sizes_;
  std::vector<float> batch_firsts_;
};

class FakeModel : public Model {
 public:
  // `control` is borrowed and must outlive the model.
  FakeModel(FakeModelControl* control, int64_t channels, int64_t classes) : control_(control) {
    info_.input_channels = channels;
    info_.num_classes = classes;
    info_.platform = "fake";
    info_.weights_source = "fake";
  }
  const ModelInfo& info() const override { return info_; }
  absl::Status Forward(const float* images, int n, int64_t height, int64_t width,
                       float* logits) const override {
    return control_->Run(images, n, height * width * info_.input_channels, info_.num_classes,
                         logits);
  }

 private:
  FakeModelControl* const control_;
  ModelInfo info_;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_TESTS_FAKES_FAKE_MODEL_H_
