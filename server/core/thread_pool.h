// A fixed pool of threads with a bounded queue.
#ifndef GHOSTSERVE_SERVER_CORE_THREAD_POOL_H_
#define GHOSTSERVE_SERVER_CORE_THREAD_POOL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace ghostserve::core {

// Runs closures on `num_threads` threads it owns. Thread-safe; TrySchedule
// never blocks and refuses work when `max_queue` closures are waiting. The
// destructor runs what is queued, then joins.
class ThreadPool {
 public:
  ThreadPool(int num_threads, int max_queue, std::function<void()> on_thread_start = nullptr);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // False if the queue is full or the pool is shutting down.
  bool TrySchedule(std::function<void()> fn);

 private:
  void Loop();

  const size_t max_queue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

inline ThreadPool::ThreadPool(int num_threads, int max_queue, std::function<void()> on_thread_start)
    : max_queue_(static_cast<size_t>(max_queue)) {
  for (int i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this, on_thread_start] {
      if (on_thread_start) on_thread_start();
      Loop();
    });
  }
}

inline ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

inline bool ThreadPool::TrySchedule(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() >= max_queue_) return false;
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
  return true;
}

inline void ThreadPool::Loop() {
  while (true) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_THREAD_POOL_H_
