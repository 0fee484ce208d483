// A Clock for tests: time moves only when the test says so.
#ifndef GHOSTSERVE_TESTS_FAKES_FAKE_CLOCK_H_
#define GHOSTSERVE_TESTS_FAKES_FAKE_CLOCK_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "server/batcher/clock.h"

namespace ghostserve::batcher {

// Time moves only through Advance. Waiters poll every millisecond of real
// time, so an Advance is noticed promptly without lost-wakeup races.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 1'000'000) : now_us_(start_us) {}
  int64_t NowMicros() const override { return now_us_.load(); }
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 int64_t deadline_us) override {
    if (deadline_us <= NowMicros()) return;
    cv.wait_for(lock, std::chrono::milliseconds(1));
  }
  void Advance(int64_t us) { now_us_ += us; }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace ghostserve::batcher

#endif  // GHOSTSERVE_TESTS_FAKES_FAKE_CLOCK_H_
