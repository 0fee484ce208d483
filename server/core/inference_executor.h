// The only threads that run LibTorch in the server.
//
// libgomp (LibTorch's OpenMP runtime here) stops spinning and falls back to
// sleeping between parallel regions as soon as the threads of all OpenMP
// teams in the process outnumber the CPUs, and every thread that ever starts
// a parallel region keeps its own team. With a team per model's batch worker
// (plus one for the main thread) GhostNet ran 2.7x slower at batch 1 (13.5 vs
// 5.0 ms, 2 CPUs). So all forward passes of all models run on this small set
// of executor threads, each leading a team of `intra_op_threads`, and no other
// thread starts OpenMP work (the main thread runs with 1 thread).
#ifndef GHOSTSERVE_SERVER_CORE_INFERENCE_EXECUTOR_H_
#define GHOSTSERVE_SERVER_CORE_INFERENCE_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace ghostserve::core {

// Thread-safe. Run blocks the caller until its closure has run on an executor
// thread. The destructor runs what is queued, then joins.
class InferenceExecutor {
 public:
  // `on_thread_start` runs first on each thread: the engine's per-thread
  // settings (for LibTorch, model::ConfigureInferenceThread). May be null.
  InferenceExecutor(int num_threads, std::function<void()> on_thread_start);
  ~InferenceExecutor();
  InferenceExecutor(const InferenceExecutor&) = delete;
  InferenceExecutor& operator=(const InferenceExecutor&) = delete;

  // Runs `fn` on an executor thread and returns when it has finished. `fn`
  // must not throw.
  void Run(const std::function<void()>& fn);

  // Runs `fn` once on every executor thread (e.g. to warm each thread's
  // OpenMP team and oneDNN state) and returns when all have finished.
  void RunOnEach(const std::function<void()>& fn);

  int size() const { return static_cast<int>(threads_.size()); }

 private:
  struct Job {
    const std::function<void()>* fn;
    bool done = false;
  };
  void Loop(const std::function<void()>& on_thread_start);

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Job*> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_INFERENCE_EXECUTOR_H_
