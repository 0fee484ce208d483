// The executors' thread plans: fixed, and adaptive (a lone job gets all
// threads on executor 0; under load one single-threaded job per executor;
// back to wide only after the hold), never more threads at work than
// executors. The set_threads hook stands in for OpenMP: each job sees the
// count its thread was given.
#include "server/core/inference_executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace ghostserve::core {
namespace {

thread_local int t_threads = 0;  // what set_threads last gave this thread

// What the jobs saw: the threads each ran with, and the most threads at work
// at once (the sum over running jobs).
struct Observed {
  std::atomic<int> in_use{0};
  std::atomic<int> max_in_use{0};
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  std::mutex mu;
  std::vector<int> threads;
  std::set<std::thread::id> wide_thread_ids;

  void Job(std::chrono::microseconds work) {
    const int mine = t_threads;
    const int now = in_use.fetch_add(mine) + mine;
    int seen = max_in_use.load();
    while (now > seen && !max_in_use.compare_exchange_weak(seen, now)) {
    }
    const int r = running.fetch_add(1) + 1;
    int seen_r = max_running.load();
    while (r > seen_r && !max_running.compare_exchange_weak(seen_r, r)) {
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      threads.push_back(mine);
      if (mine > 1) wide_thread_ids.insert(std::this_thread::get_id());
    }
    std::this_thread::sleep_for(work);
    running.fetch_sub(1);
    in_use.fetch_sub(mine);
  }
  int Last() {
    std::lock_guard<std::mutex> lock(mu);
    return threads.back();
  }
};

ExecutorPlan Adaptive(int executors, int64_t hold_us) {
  ExecutorPlan plan;
  plan.executors = executors;
  plan.adaptive = true;
  plan.hold_us = hold_us;
  return plan;
}

void SetThreads(int n) { t_threads = n; }

// `callers` threads each run `jobs` jobs back to back.
void Load(InferenceExecutor& executor, Observed& seen, int callers, int jobs) {
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&] {
      for (int j = 0; j < jobs; ++j) {
        executor.Run([&] { seen.Job(std::chrono::microseconds(300)); });
      }
    });
  }
  for (auto& t : threads) t.join();
}

TEST(InferenceExecutorTest, FixedPlanRunsJobsSideBySideWithItsThreads) {
  ExecutorPlan plan;
  plan.executors = 2;
  plan.threads_per_executor = 3;
  InferenceExecutor executor(plan, SetThreads);
  EXPECT_EQ(plan.Describe(), "fixed (2x3)");
  // Two jobs that each wait for the other finish only if they run at once.
  std::atomic<int> arrived{0};
  std::vector<int> threads(2);
  auto job = [&](int i) {
    threads[static_cast<size_t>(i)] = t_threads;
    arrived.fetch_add(1);
    while (arrived.load() < 2) std::this_thread::yield();
  };
  std::thread a([&] { executor.Run([&] { job(0); }); });
  std::thread b([&] { executor.Run([&] { job(1); }); });
  a.join();
  b.join();
  EXPECT_EQ(threads, (std::vector<int>{3, 3}));
  EXPECT_FALSE(executor.wide());
  EXPECT_EQ(executor.switches(), 0);
}

TEST(InferenceExecutorTest, AdaptiveLoneJobGetsAllThreads) {
  InferenceExecutor executor(Adaptive(4, 50000), SetThreads);
  EXPECT_EQ(executor.plan().Describe(), "adaptive (1x4 alone, 4x1 under load)");
  Observed seen;
  for (int i = 0; i < 5; ++i) executor.Run([&] { seen.Job(std::chrono::microseconds(100)); });
  EXPECT_EQ(seen.threads, (std::vector<int>{4, 4, 4, 4, 4}));
  EXPECT_TRUE(executor.wide());
  EXPECT_EQ(executor.switches(), 0);
}

TEST(InferenceExecutorTest, AdaptiveKeepsJobsThatGainNothingSingleThreaded) {
  InferenceExecutor executor(Adaptive(2, 50000), SetThreads);
  Observed seen;
  executor.Run([&] { seen.Job(std::chrono::microseconds(0)); }, /*may_use_all_threads=*/false);
  executor.Run([&] { seen.Job(std::chrono::microseconds(0)); });
  EXPECT_EQ(seen.threads, (std::vector<int>{1, 2}));
  EXPECT_TRUE(executor.wide());
}

TEST(InferenceExecutorTest, AdaptiveGoesNarrowUnderLoadWithoutOversubscribing) {
  std::vector<bool> reported;
  std::mutex mu;
  InferenceExecutor executor(Adaptive(2, 10'000'000), SetThreads, [&](bool wide) {
    std::lock_guard<std::mutex> lock(mu);
    reported.push_back(wide);
  });
  Observed seen;
  Load(executor, seen, /*callers=*/6, /*jobs=*/40);
  // Never more threads at work than executors (a wide job runs alone), yet
  // single-threaded jobs did run side by side.
  EXPECT_LE(seen.max_in_use.load(), 2);
  EXPECT_EQ(seen.max_running.load(), 2);
  EXPECT_GT(std::count(seen.threads.begin(), seen.threads.end(), 1), 200);
  // Only executor 0 ever led more than one thread.
  EXPECT_LE(seen.wide_thread_ids.size(), 1u);
  EXPECT_FALSE(executor.wide());
  EXPECT_EQ(executor.switches(), 1);
  EXPECT_EQ(reported, (std::vector<bool>{false}));
  // The hold (10 s) has not passed: a lone job stays single-threaded.
  executor.Run([&] { seen.Job(std::chrono::microseconds(0)); });
  EXPECT_EQ(seen.Last(), 1);
  EXPECT_FALSE(executor.wide());
}

TEST(InferenceExecutorTest, AdaptiveGoesWideAgainAfterTheHold) {
  InferenceExecutor executor(Adaptive(2, 20000), SetThreads);
  Observed seen;
  Load(executor, seen, /*callers=*/4, /*jobs=*/20);
  EXPECT_FALSE(executor.wide());
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  executor.Run([&] { seen.Job(std::chrono::microseconds(0)); });
  EXPECT_EQ(seen.Last(), 2);
  EXPECT_TRUE(executor.wide());
  EXPECT_GE(executor.switches(), 2);  // narrow under the load, wide after it
  EXPECT_LE(seen.max_in_use.load(), 2);
}

TEST(InferenceExecutorTest, RunOnEachWarmsEveryExecutorThenTimesALoneJobBothWays) {
  InferenceExecutor executor(Adaptive(3, 50000), SetThreads);
  std::mutex mu;
  std::vector<std::pair<int, bool>> calls;
  std::set<std::thread::id> ids;
  std::atomic<int> running{0};
  executor.RunOnEach([&](int given, bool alone) {
    const int others = running.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_EQ(given, t_threads);
      if (alone) {
        EXPECT_EQ(others, 0);
      }
      calls.emplace_back(given, alone);
      ids.insert(std::this_thread::get_id());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    running.fetch_sub(1);
  });
  const std::vector<std::pair<int, bool>> expected{
      {1, false}, {1, false}, {1, false}, {1, true}, {3, true}};
  EXPECT_EQ(calls, expected);
  EXPECT_EQ(ids.size(), 3u);     // each executor; the lone ones on executor 0
  EXPECT_TRUE(executor.wide());  // warm-up does not count as load
  EXPECT_EQ(executor.switches(), 0);

  ExecutorPlan fixed;
  fixed.executors = 2;
  fixed.threads_per_executor = 2;
  InferenceExecutor fixed_executor(fixed, SetThreads);
  calls.clear();
  ids.clear();
  fixed_executor.RunOnEach([&](int given, bool alone) {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(given, t_threads);
    calls.emplace_back(given, alone);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(calls, (std::vector<std::pair<int, bool>>{{2, false}, {2, false}}));
  EXPECT_EQ(ids.size(), 2u);
}

}  // namespace
}  // namespace ghostserve::core
