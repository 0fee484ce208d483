// The only threads that run LibTorch in the server, and the thread plan they
// follow.
//
// libgomp (LibTorch's OpenMP runtime here) stops spinning and falls back to
// sleeping between parallel regions as soon as the threads of all OpenMP
// teams in the process outnumber the CPUs, and every thread that ever starts
// a parallel region keeps its own team. With a team per model's batch worker
// (plus one for the main thread) GhostNet ran 2.7x slower at batch 1 (13.5 vs
// 5.0 ms, 2 CPUs). So all forward passes of all models run on this small set
// of executor threads, and no other thread starts OpenMP work (the main
// thread runs with 1 thread).
//
// Plans (ExecutorPlan):
// - fixed: `executors` threads, each running every job with
//   `threads_per_executor` OpenMP threads.
// - adaptive: `executors` threads (one per CPU). At low load a job runs alone
//   on executor 0 with `executors` OpenMP threads (wide: the lowest latency
//   for a lone request); once jobs queue behind a running one, every executor
//   runs jobs single-threaded side by side (narrow: the most throughput, no
//   OpenMP barriers to stall when other threads preempt one). It goes narrow
//   as soon as a job waits, and wide again only after no job has waited for
//   `hold_us` (hysteresis). A wide job never runs beside another job, so the
//   OpenMP threads at work never outnumber the CPUs, and only executor 0
//   ever leads a team of more than one thread.
#ifndef GHOSTSERVE_SERVER_CORE_INFERENCE_EXECUTOR_H_
#define GHOSTSERVE_SERVER_CORE_INFERENCE_EXECUTOR_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace ghostserve::core {

struct ExecutorPlan {
  int executors = 1;
  // Fixed plans only: OpenMP threads of every job.
  int threads_per_executor = 1;
  bool adaptive = false;
  // Adaptive only: how long no job may have waited before a lone job runs
  // wide again.
  int64_t hold_us = 50000;

  // "adaptive (1x2 alone, 2x1 under load)" or "fixed (2x1)".
  std::string Describe() const;
};

// Thread-safe. Run blocks the caller until its closure has run on an executor
// thread. The destructor runs what is queued, then joins.
class InferenceExecutor {
 public:
  // `set_threads(n)` runs on an executor thread to give it n OpenMP threads:
  // first when the thread starts, then whenever the plan changes its count
  // (for LibTorch, model::ConfigureInferenceThread). May be null.
  // `on_switch(wide)` runs each time the adaptive plan changes mode (which
  // starts wide), under the executor's lock: it must be quick and must not
  // call back. May be null.
  InferenceExecutor(const ExecutorPlan& plan, std::function<void(int)> set_threads,
                    std::function<void(bool)> on_switch = nullptr);
  ~InferenceExecutor();
  InferenceExecutor(const InferenceExecutor&) = delete;
  InferenceExecutor& operator=(const InferenceExecutor&) = delete;

  // Runs `fn` on an executor thread and returns when it has finished. `fn`
  // must not throw. With `may_use_all_threads` false the adaptive plan runs
  // it single-threaded even when it would run alone (for models measured no
  // faster with all threads).
  void Run(const std::function<void()>& fn, bool may_use_all_threads = true);

  // Runs `fn(threads, false)` once on every executor thread, side by side,
  // with the threads each has under load, so each thread's OpenMP team and
  // kernel caches are ready before the first request. The adaptive plan then
  // runs `fn(1, true)` and `fn(executors, true)` on executor 0, each alone, so
  // a lone job's cost can be timed both ways. Returns when all have finished.
  void RunOnEach(const std::function<void(int threads, bool alone)>& fn);

  int size() const { return static_cast<int>(threads_.size()); }
  const ExecutorPlan& plan() const { return plan_; }
  // Adaptive plan: true while a lone job runs with all threads.
  bool wide() const;
  // Mode changes of the adaptive plan so far.
  int64_t switches() const;

 private:
  struct Job {
    const std::function<void()>* fn;
    int target = -1;  // executor index, or -1 for any
    int threads = 0;  // OpenMP threads, or 0 for the plan's choice
    bool may_use_all_threads = true;
    bool done = false;
  };
  void Enqueue(Job* job);
  void Loop(int index);
  // The first queued job executor `index` may start now, or null.
  Job* Next(int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int ThreadsFor(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t NowUs() const;

  const ExecutorPlan plan_;
  const std::function<void(int)> set_threads_;
  const std::function<void(bool)> on_switch_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Job*> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wide_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool running_wide_ ABSL_GUARDED_BY(mu_) = false;  // a job with >1 thread runs
  int64_t last_wait_us_ ABSL_GUARDED_BY(mu_) = 0;   // a job last had to wait
  int64_t switches_ ABSL_GUARDED_BY(mu_) = 0;
  const std::chrono::steady_clock::time_point epoch_ = std::chrono::steady_clock::now();
  std::vector<std::thread> threads_;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_INFERENCE_EXECUTOR_H_
