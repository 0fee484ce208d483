// Time source for the batcher, injected so tests can drive time by hand.
#ifndef GHOSTSERVE_SERVER_BATCHER_CLOCK_H_
#define GHOSTSERVE_SERVER_BATCHER_CLOCK_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace ghostserve::batcher {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Microseconds on a monotonic scale (not wall time).
  virtual int64_t NowMicros() const = 0;
  // Blocks on `cv` (with `lock` held by the caller) until notified or until
  // NowMicros() may have reached `deadline_us`. May return early; callers
  // re-check their condition in a loop.
  virtual void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                         int64_t deadline_us) = 0;
};

// steady_clock.
class RealClock : public Clock {
 public:
  int64_t NowMicros() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 int64_t deadline_us) override {
    const int64_t wait = deadline_us - NowMicros();
    if (wait <= 0) return;
    cv.wait_for(lock, std::chrono::microseconds(wait));
  }
  // A process-wide instance; RealClock has no state.
  static RealClock* Get() {
    static RealClock clock;
    return &clock;
  }
};

}  // namespace ghostserve::batcher

#endif  // GHOSTSERVE_SERVER_BATCHER_CLOCK_H_
