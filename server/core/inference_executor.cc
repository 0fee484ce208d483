#include "server/core/inference_executor.h"

#include "absl/strings/str_cat.h"

namespace ghostserve::core {

std::string ExecutorPlan::Describe() const {
  if (adaptive) {
    return absl::StrCat("adaptive (1x", executors, " alone, ", executors, "x1 under load)");
  }
  return absl::StrCat("fixed (", executors, "x", threads_per_executor, ")");
}

InferenceExecutor::InferenceExecutor(const ExecutorPlan& plan, std::function<void(int)> set_threads,
                                     std::function<void(bool)> on_switch)
    : plan_(plan), set_threads_(std::move(set_threads)), on_switch_(std::move(on_switch)) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wide_ = plan_.adaptive;  // nothing has waited yet
    last_wait_us_ = -plan_.hold_us;
  }
  for (int i = 0; i < plan_.executors; ++i) {
    threads_.emplace_back([this, i] { Loop(i); });
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

int64_t InferenceExecutor::NowUs() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               epoch_)
      .count();
}

bool InferenceExecutor::wide() const {
  std::lock_guard<std::mutex> lock(mu_);
  return wide_;
}

int64_t InferenceExecutor::switches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return switches_;
}

void InferenceExecutor::Enqueue(Job* job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
    if (plan_.adaptive && job->target < 0) {
      const int64_t now = NowUs();
      bool wide = wide_;
      if (running_ + static_cast<int>(queue_.size()) >= 2) {
        // This job cannot start at once: throughput first.
        last_wait_us_ = now;
        wide = false;
      } else if (now - last_wait_us_ >= plan_.hold_us) {
        wide = true;  // alone, and nothing has waited for a while
      }
      if (wide != wide_) {
        wide_ = wide;
        ++switches_;
        // Under the lock so that mode reports arrive in order; on_switch is
        // a gauge update.
        if (on_switch_) on_switch_(wide);
      }
    }
  }
  work_cv_.notify_all();
}

int InferenceExecutor::ThreadsFor(const Job& job) const {
  if (job.threads > 0) return job.threads;
  if (!plan_.adaptive) return plan_.threads_per_executor;
  return wide_ && job.may_use_all_threads ? plan_.executors : 1;
}

InferenceExecutor::Job* InferenceExecutor::Next(int index) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    Job* job = *it;
    if (job->target >= 0 && job->target != index) continue;
    if (plan_.adaptive) {
      // A job with all threads runs alone, on executor 0 (the only thread
      // that ever leads an OpenMP team of more than one).
      if (running_wide_) return nullptr;
      if (ThreadsFor(*job) > 1) {
        if (index != 0) continue;
        if (running_ > 0) return nullptr;  // in order: wait for the others
      }
    }
    queue_.erase(it);
    return job;
  }
  return nullptr;
}

void InferenceExecutor::Run(const std::function<void()>& fn, bool may_use_all_threads) {
  Job job{&fn};
  job.may_use_all_threads = may_use_all_threads;
  Enqueue(&job);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&job] { return job.done; });
}

void InferenceExecutor::RunOnEach(const std::function<void(int threads, bool alone)>& fn) {
  const auto run_all = [this](std::vector<Job>& jobs) {
    for (auto& job : jobs) Enqueue(&job);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&jobs] {
      for (const auto& job : jobs) {
        if (!job.done) return false;
      }
      return true;
    });
  };
  const int narrow = plan_.adaptive ? 1 : plan_.threads_per_executor;
  const std::function<void()> side_by_side = [&] { fn(narrow, false); };
  std::vector<Job> jobs(static_cast<size_t>(size()));
  for (size_t i = 0; i < jobs.size(); ++i)
    jobs[i] = Job{&side_by_side, static_cast<int>(i), narrow};
  run_all(jobs);
  if (!plan_.adaptive) return;
  for (const int threads : {1, plan_.executors}) {
    const std::function<void()> alone = [&] { fn(threads, true); };
    std::vector<Job> one{Job{&alone, 0, threads}};
    run_all(one);
  }
}

void InferenceExecutor::Loop(int index) {
  int current = plan_.adaptive ? 1 : plan_.threads_per_executor;
  if (set_threads_) set_threads_(current);
  while (true) {
    Job* job = nullptr;
    int threads = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] {
        job = Next(index);
        return job != nullptr || (stop_ && queue_.empty());
      });
      if (job == nullptr) return;
      threads = ThreadsFor(*job);
      ++running_;
      if (plan_.adaptive && threads > 1) running_wide_ = true;
    }
    if (threads != current && set_threads_) {
      set_threads_(threads);
      current = threads;
    }
    (*job->fn)();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
      if (plan_.adaptive && threads > 1) running_wide_ = false;
      job->done = true;
    }
    done_cv_.notify_all();
    work_cv_.notify_all();  // a job that had to wait for this one may start
  }
}

}  // namespace ghostserve::core
