#include "server/core/inference_executor.h"

namespace ghostserve::core {

InferenceExecutor::InferenceExecutor(int num_threads, std::function<void()> on_thread_start) {
  for (int i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this, on_thread_start] { Loop(on_thread_start); });
  }
}

InferenceExecutor::~InferenceExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void InferenceExecutor::Run(const std::function<void()>& fn) {
  Job job{&fn};
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(&job);
  work_cv_.notify_one();
  done_cv_.wait(lock, [&job] { return job.done; });
}

void InferenceExecutor::RunOnEach(const std::function<void()>& fn) {
  // One job per executor, each holding its thread until all have started, so
  // no thread can take two of them.
  const int n = size();
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  std::function<void()> job = [&] {
    {
      std::unique_lock<std::mutex> lock(mu);
      ++started;
      cv.notify_all();
      cv.wait(lock, [&] { return started == n; });
    }
    fn();
  };
  std::vector<std::thread> callers;
  for (int i = 0; i < n; ++i) callers.emplace_back([this, &job] { Run(job); });
  for (auto& t : callers) t.join();
}

void InferenceExecutor::Loop(const std::function<void()>& on_thread_start) {
  if (on_thread_start) on_thread_start();
  while (true) {
    Job* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
    }
    (*job->fn)();
    {
      std::lock_guard<std::mutex> lock(mu_);
      job->done = true;
    }
    done_cv_.notify_all();
  }
}

}  // namespace ghostserve::core
