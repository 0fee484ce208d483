#include "server/batcher/batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>
#include <vector>

#include "server/batcher/clock.h"
#include "tests/fakes/fake_clock.h"

namespace ghostserve::batcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Generous bound for events that should happen promptly; only reached when
// the feature is broken.
constexpr auto kEventTimeout = std::chrono::seconds(10);
// Real time given to the batcher to (wrongly) do something before asserting
// that it did not. Never used to assert that something happened.
constexpr auto kAbsenceWait = std::chrono::milliseconds(50);

// Records how every task was answered and stands in for the model: the
// process function records each batch (ids in the order received) and
// answers its tasks. Optionally holds batches at a gate until released.
class FakeTask;

class FakeModel {
 public:
  ProcessBatchFn<FakeTask> ProcessFn();

  void RecordFail(int id, const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    failures_[id] = status;
    ++answers_[id];
    cv_.notify_all();
  }

  // Waits until `pred` holds (called with the lock held); false on timeout.
  bool WaitFor(const std::function<bool()>& pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kEventTimeout, pred);
  }
  bool WaitForBatches(size_t n) {
    return WaitFor([&] { return batches_.size() >= n; });
  }
  bool WaitForAnswers(int n) {
    return WaitFor([&] { return TotalAnswersLocked() >= n; });
  }
  bool WaitForInFlight(int n) {
    return WaitFor([&] { return in_flight_ >= n; });
  }

  // Batches held at the gate wait until Open().
  void CloseGate() {
    std::lock_guard<std::mutex> lock(mu_);
    gate_open_ = false;
  }
  void OpenGate() {
    std::lock_guard<std::mutex> lock(mu_);
    gate_open_ = true;
    cv_.notify_all();
  }

  std::vector<std::vector<int>> batches() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::vector<size_t> batch_sizes() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<size_t> sizes;
    for (const auto& b : batches_) sizes.push_back(b.size());
    return sizes;
  }
  // Every id that reached the process function, in processing order.
  std::vector<int> processed_ids() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int> ids;
    for (const auto& b : batches_) ids.insert(ids.end(), b.begin(), b.end());
    return ids;
  }
  std::map<int, absl::Status> failures() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  // id -> number of times the task was answered (run or failed).
  std::map<int, int> answers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return answers_;
  }
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }

 private:
  int TotalAnswersLocked() const {
    int n = 0;
    for (const auto& [id, count] : answers_) n += count;
    return n;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<int>> batches_;
  std::map<int, absl::Status> failures_;
  std::map<int, int> answers_;
  bool gate_open_ = true;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
};

class FakeTask : public BatchTask {
 public:
  // `external_cancel`, when given, is a flag another thread may set at any
  // time; it must outlive the task.
  FakeTask(int id, FakeModel* model, int64_t group = -1,
           const std::atomic<bool>* external_cancel = nullptr)
      : id_(id), model_(model), group_(group), external_cancel_(external_cancel) {}

  int64_t group() const { return group_; }
  bool IsCancelled() const {
    return cancelled_.load() || (external_cancel_ != nullptr && external_cancel_->load());
  }
  void Fail(const absl::Status& status) { model_->RecordFail(id_, status); }

  int id() const { return id_; }
  void Cancel() { cancelled_.store(true); }

 private:
  const int id_;
  FakeModel* const model_;
  const int64_t group_;
  const std::atomic<bool>* const external_cancel_;
  std::atomic<bool> cancelled_{false};
};

ProcessBatchFn<FakeTask> FakeModel::ProcessFn() {
  return [this](std::vector<std::unique_ptr<FakeTask>> batch) {
    std::unique_lock<std::mutex> lock(mu_);
    std::vector<int> ids;
    for (const auto& t : batch) ids.push_back(t->id());
    batches_.push_back(ids);
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    cv_.notify_all();
    cv_.wait(lock, [this] { return gate_open_; });
    --in_flight_;
    for (int id : ids) ++answers_[id];
    cv_.notify_all();
  };
}

std::unique_ptr<FakeTask> MakeTask(int id, FakeModel* model) {
  return std::make_unique<FakeTask>(id, model);
}

std::unique_ptr<Batcher<FakeTask>> MakeBatcher(const BatcherOptions& options, Clock* clock,
                                               FakeModel* model) {
  auto b = Batcher<FakeTask>::Create(options, clock, model->ProcessFn());
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// Submits and expects success.
void SubmitOk(Batcher<FakeTask>& batcher, int id, FakeModel* model, int64_t deadline_us = 0) {
  auto task = MakeTask(id, model);
  task->deadline_us = deadline_us;
  ASSERT_TRUE(batcher.Submit(&task).ok()) << "task " << id;
  EXPECT_EQ(task, nullptr) << "an accepted task must be taken from the caller";
}

TEST(BatcherTest, RunsFullBatchWithoutWaitingForDelay) {
  FakeClock clock;  // never advanced: only a full batch can leave
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 4;
  options.max_delay_us = 10'000'000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  for (int i = 0; i < 5; ++i) SubmitOk(*batcher, i, &model);

  ASSERT_TRUE(model.WaitForBatches(1));
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_THAT(model.batch_sizes(), ElementsAre(4u));
  EXPECT_THAT(model.processed_ids(), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(batcher->QueueDepth(), 1) << "the fifth task waits for more or for the delay";
}

TEST(BatcherTest, FlushesPartialBatchAfterMaxDelay) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 2000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  for (int i = 0; i < 3; ++i) SubmitOk(*batcher, i, &model);
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_TRUE(model.batches().empty()) << "partial batch left before max_delay";

  clock.Advance(1999);
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_TRUE(model.batches().empty()) << "partial batch left 1us before max_delay";
  EXPECT_EQ(batcher->QueueDepth(), 3);

  clock.Advance(1);
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.batch_sizes(), ElementsAre(3u));
  EXPECT_THAT(model.processed_ids(), ElementsAre(0, 1, 2));
}

TEST(BatcherTest, BatchesNeverMixGroups) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 2000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);
  const int64_t groups[] = {7, 7, 9, 9, 9};
  for (int i = 0; i < 5; ++i) {
    std::unique_ptr<FakeTask> task = std::make_unique<FakeTask>(i, &model, groups[i]);
    ASSERT_TRUE(batcher->Submit(&task).ok());
  }
  clock.Advance(2000);
  ASSERT_TRUE(model.WaitForBatches(2));
  EXPECT_THAT(model.batches(), ElementsAre(ElementsAre(0, 1), ElementsAre(2, 3, 4)));
}

TEST(BatcherTest, PartialBatchWaitsWhileMoreAreComing) {
  FakeClock clock;
  FakeModel model;
  std::atomic<bool> more{true};
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 2000;
  auto b = Batcher<FakeTask>::Create(options, &clock, model.ProcessFn(), nullptr,
                                     [&more] { return more.load(); });
  ASSERT_TRUE(b.ok()) << b.status();
  auto& batcher = *b;

  for (int i = 0; i < 3; ++i) SubmitOk(*batcher, i, &model);
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_TRUE(model.batches().empty()) << "left while the hint said more were coming";

  // Nothing else on its way: the partial batch leaves without the clock moving.
  more = false;
  batcher->Poke();
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.batch_sizes(), ElementsAre(3u));
}

TEST(BatcherTest, PartialBatchLeavesAtOnceWhenNothingMoreIsComing) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 1'000'000;
  auto b =
      Batcher<FakeTask>::Create(options, &clock, model.ProcessFn(), nullptr, [] { return false; });
  ASSERT_TRUE(b.ok()) << b.status();
  SubmitOk(**b, 0, &model);
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.batch_sizes(), ElementsAre(1u));
}

TEST(BatcherTest, MaxDelayCountsFromOldestTask) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 2000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 0, &model);
  clock.Advance(1500);
  SubmitOk(*batcher, 1, &model);
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_TRUE(model.batches().empty());

  // 2000us after the first task, 500us after the second.
  clock.Advance(500);
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.processed_ids(), ElementsAre(0, 1));
}

TEST(BatcherTest, ZeroDelayRunsEachTaskWithoutWaiting) {
  FakeClock clock;  // never advanced
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 0;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 7, &model);
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.processed_ids(), ElementsAre(7));
}

TEST(BatcherTest, RefusesAtOnceWhenQueueFullAndLeavesTaskWithCaller) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 1000;
  options.max_queue_size = 2;
  options.name = "ghostnet_test";
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 0, &model);
  SubmitOk(*batcher, 1, &model);

  auto refused = MakeTask(2, &model);
  FakeTask* const refused_raw = refused.get();
  const absl::Status s = batcher->Submit(&refused);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("ghostnet_test"));
  EXPECT_EQ(refused.get(), refused_raw) << "a refused task stays with the caller";
  EXPECT_EQ(batcher->QueueDepth(), 2);

  // Once the queued batch has left, the queue has room again.
  clock.Advance(1000);
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.processed_ids(), ElementsAre(0, 1));
  ASSERT_TRUE(batcher->Submit(&refused).ok());
  EXPECT_EQ(refused, nullptr);
  clock.Advance(1000);
  ASSERT_TRUE(model.WaitForBatches(2));
  EXPECT_THAT(model.processed_ids(), ElementsAre(0, 1, 2));
  EXPECT_TRUE(model.failures().empty());
}

TEST(BatcherTest, QueueLimitDoesNotCountRunningBatches) {
  FakeClock clock;
  FakeModel model;
  model.CloseGate();
  BatcherOptions options;
  options.max_batch_size = 2;
  options.max_queue_size = 2;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 0, &model);
  SubmitOk(*batcher, 1, &model);
  ASSERT_TRUE(model.WaitForInFlight(1));  // full batch held in the model
  SubmitOk(*batcher, 2, &model);
  SubmitOk(*batcher, 3, &model);
  EXPECT_EQ(batcher->QueueDepth(), 2);
  EXPECT_EQ(batcher->Outstanding(), 4);
  auto refused = MakeTask(4, &model);
  EXPECT_EQ(batcher->Submit(&refused).code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused, nullptr);

  model.OpenGate();
  ASSERT_TRUE(model.WaitForAnswers(4));
  EXPECT_THAT(model.batch_sizes(), ElementsAre(2u, 2u));
}

TEST(BatcherTest, StopAcceptingRefusesWithDrainingAndStillRunsQueued) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 1000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 0, &model);
  batcher->StopAccepting();

  auto late = MakeTask(1, &model);
  const absl::Status s = batcher->Submit(&late);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("draining"));
  EXPECT_NE(late, nullptr) << "a refused task stays with the caller";

  clock.Advance(1000);
  ASSERT_TRUE(model.WaitForBatches(1));
  EXPECT_THAT(model.processed_ids(), ElementsAre(0));
  EXPECT_EQ(model.answers().count(1), 0u);
}

TEST(BatcherTest, FailsTaskWhoseDeadlinePassedBeforeBatchFormed) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 5000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  const int64_t t0 = clock.NowMicros();
  SubmitOk(*batcher, 0, &model, /*deadline_us=*/t0 + 1000);       // expires in the queue
  SubmitOk(*batcher, 1, &model, /*deadline_us=*/t0 + 1'000'000);  // still has time
  SubmitOk(*batcher, 2, &model, /*deadline_us=*/0);               // no deadline
  clock.Advance(5000);

  ASSERT_TRUE(model.WaitForAnswers(3));
  EXPECT_THAT(model.processed_ids(), ElementsAre(1, 2));
  const auto failures = model.failures();
  ASSERT_EQ(failures.size(), 1u);
  ASSERT_EQ(failures.count(0), 1u);
  EXPECT_EQ(failures.at(0).code(), absl::StatusCode::kDeadlineExceeded) << failures.at(0);
}

TEST(BatcherTest, DoesNotCallProcessWhenEveryTaskExpired) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 5000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  const int64_t t0 = clock.NowMicros();
  SubmitOk(*batcher, 0, &model, t0 + 10);
  SubmitOk(*batcher, 1, &model, t0 + 20);
  clock.Advance(5000);

  ASSERT_TRUE(model.WaitForAnswers(2));
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_TRUE(model.batches().empty()) << "process called with expired tasks only";
  for (int id : {0, 1}) {
    EXPECT_EQ(model.failures().at(id).code(), absl::StatusCode::kDeadlineExceeded);
  }
}

TEST(BatcherTest, DropsCancelledTaskWithCancelled) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 8;
  options.max_delay_us = 1000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  auto cancelled = std::make_unique<FakeTask>(0, &model);
  FakeTask* const cancelled_raw = cancelled.get();
  std::unique_ptr<FakeTask> task = std::move(cancelled);
  ASSERT_TRUE(batcher->Submit(&task).ok());
  SubmitOk(*batcher, 1, &model);
  // The caller goes away while the task waits in the queue.
  cancelled_raw->Cancel();
  clock.Advance(1000);

  ASSERT_TRUE(model.WaitForAnswers(2));
  EXPECT_THAT(model.processed_ids(), ElementsAre(1));
  const auto failures = model.failures();
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures.at(0).code(), absl::StatusCode::kCancelled) << failures.at(0);
}

TEST(BatcherTest, DestructorRunsQueuedTasksThenJoins) {
  FakeClock clock;  // never advanced: only shutdown can flush partial batches
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 4;
  options.max_delay_us = 10'000'000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  constexpr int kTasks = 10;
  for (int i = 0; i < kTasks; ++i) SubmitOk(*batcher, i, &model);
  batcher.reset();

  // Everything was answered before the destructor returned, exactly once.
  const auto answers = model.answers();
  ASSERT_EQ(answers.size(), static_cast<size_t>(kTasks));
  for (const auto& [id, count] : answers) EXPECT_EQ(count, 1) << "task " << id;
  EXPECT_TRUE(model.failures().empty());
  for (size_t size : model.batch_sizes()) EXPECT_LE(size, 4u);
  std::vector<int> want(kTasks);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(model.processed_ids(), want);
}

TEST(BatcherTest, DeliversTasksInFifoOrder) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 3;
  options.max_delay_us = 1000;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  constexpr int kTasks = 10;
  for (int i = 0; i < kTasks; ++i) SubmitOk(*batcher, i, &model);
  clock.Advance(1000);
  ASSERT_TRUE(model.WaitForAnswers(kTasks));

  std::vector<int> want(kTasks);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(model.processed_ids(), want);
  for (size_t size : model.batch_sizes()) EXPECT_LE(size, 3u);
}

TEST(BatcherTest, TwoWorkersRunTwoBatchesAtOnce) {
  FakeClock clock;
  FakeModel model;
  model.CloseGate();  // batches stay in the model until released
  BatcherOptions options;
  options.max_batch_size = 1;
  options.num_workers = 2;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 0, &model);
  SubmitOk(*batcher, 1, &model);
  EXPECT_TRUE(model.WaitForInFlight(2)) << "second batch did not start while the first ran";
  EXPECT_EQ(batcher->Outstanding(), 2);
  EXPECT_EQ(batcher->QueueDepth(), 0);

  model.OpenGate();
  ASSERT_TRUE(model.WaitForAnswers(2));
  EXPECT_EQ(model.max_in_flight(), 2);
}

TEST(BatcherTest, OneWorkerRunsOneBatchAtATime) {
  FakeClock clock;
  FakeModel model;
  model.CloseGate();
  BatcherOptions options;
  options.max_batch_size = 1;
  options.num_workers = 1;
  auto batcher = MakeBatcher(options, &clock, &model);
  ASSERT_NE(batcher, nullptr);

  SubmitOk(*batcher, 0, &model);
  SubmitOk(*batcher, 1, &model);
  ASSERT_TRUE(model.WaitForInFlight(1));
  std::this_thread::sleep_for(kAbsenceWait);
  EXPECT_EQ(model.max_in_flight(), 1);
  EXPECT_EQ(batcher->QueueDepth(), 1);
  EXPECT_EQ(batcher->Outstanding(), 2);

  model.OpenGate();
  ASSERT_TRUE(model.WaitForAnswers(2));
  EXPECT_EQ(model.max_in_flight(), 1);
}

TEST(BatcherTest, RunsWorkerStartHookOnEveryWorker) {
  FakeClock clock;
  FakeModel model;
  BatcherOptions options;
  options.num_workers = 3;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread::id> started;
  auto batcher = Batcher<FakeTask>::Create(options, &clock, model.ProcessFn(), [&] {
    std::lock_guard<std::mutex> lock(mu);
    started.push_back(std::this_thread::get_id());
    cv.notify_all();
  });
  ASSERT_TRUE(batcher.ok()) << batcher.status();
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, kEventTimeout, [&] { return started.size() == 3; }));
  for (const auto& id : started) EXPECT_NE(id, std::this_thread::get_id());
  EXPECT_NE(started[0], started[1]);
  EXPECT_NE(started[1], started[2]);
  EXPECT_NE(started[0], started[2]);
}

TEST(BatcherTest, OptionsValidateAcceptsDefaultsAndBounds) {
  EXPECT_TRUE(BatcherOptions{}.Validate().ok());
  BatcherOptions o;
  o.max_batch_size = 1;
  o.max_delay_us = 0;
  o.max_queue_size = 1;
  o.num_workers = 1;
  EXPECT_TRUE(o.Validate().ok());
  o.max_batch_size = 1024;
  o.max_delay_us = 10'000'000;
  o.max_queue_size = 1'000'000;
  o.num_workers = 64;
  EXPECT_TRUE(o.Validate().ok());
}

TEST(BatcherTest, OptionsValidateRejectsBadValues) {
  const std::vector<std::pair<const char*, std::function<void(BatcherOptions&)>>> cases = {
      {"batch size 0", [](BatcherOptions& o) { o.max_batch_size = 0; }},
      {"batch size -1", [](BatcherOptions& o) { o.max_batch_size = -1; }},
      {"batch size 1025", [](BatcherOptions& o) { o.max_batch_size = 1025; }},
      {"delay -1", [](BatcherOptions& o) { o.max_delay_us = -1; }},
      {"delay 10s+1us", [](BatcherOptions& o) { o.max_delay_us = 10'000'001; }},
      {"queue 0", [](BatcherOptions& o) { o.max_queue_size = 0; }},
      {"queue 1000001", [](BatcherOptions& o) { o.max_queue_size = 1'000'001; }},
      {"workers 0", [](BatcherOptions& o) { o.num_workers = 0; }},
      {"workers 65", [](BatcherOptions& o) { o.num_workers = 65; }},
  };
  FakeClock clock;
  FakeModel model;
  for (const auto& [what, mutate] : cases) {
    BatcherOptions o;
    mutate(o);
    EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument) << what;
    // Create refuses the same options rather than starting workers.
    EXPECT_EQ(Batcher<FakeTask>::Create(o, &clock, model.ProcessFn()).status().code(),
              absl::StatusCode::kInvalidArgument)
        << what;
  }
}

TEST(BatcherTest, CreateRejectsMissingClockOrProcessFunction) {
  FakeClock clock;
  FakeModel model;
  EXPECT_EQ(Batcher<FakeTask>::Create(BatcherOptions{}, nullptr, model.ProcessFn()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Batcher<FakeTask>::Create(BatcherOptions{}, &clock, ProcessBatchFn<FakeTask>())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Mostly for `make tsan`: submitting threads, a thread cancelling tasks at
// random, two workers and StopAccepting all race on one batcher. Every
// accepted task is answered exactly once (run, or failed with CANCELLED);
// every refused one stays with its caller and is never answered.
TEST(BatcherTest, ConcurrentSubmitCancelAndDrainAnswerEveryAcceptedTaskOnce) {
  FakeModel model;
  BatcherOptions options;
  options.max_batch_size = 4;
  options.max_delay_us = 100;
  options.max_queue_size = 32;
  options.num_workers = 2;
  auto batcher = MakeBatcher(options, RealClock::Get(), &model);
  ASSERT_NE(batcher, nullptr);

  constexpr int kThreads = 4, kPerThread = 250, kTasks = kThreads * kPerThread;
  std::unique_ptr<std::atomic<bool>[]> cancel(new std::atomic<bool>[kTasks]());
  std::vector<std::vector<int>> accepted(kThreads), refused(kThreads);
  std::atomic<int> submitted{0};
  std::atomic<bool> done{false};

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kPerThread; ++k) {
        const int id = t * kPerThread + k;
        std::unique_ptr<FakeTask> task = std::make_unique<FakeTask>(id, &model, -1, &cancel[id]);
        if (batcher->Submit(&task).ok()) {
          accepted[t].push_back(id);
        } else {
          EXPECT_NE(task, nullptr) << "a refused task must stay with the caller";
          refused[t].push_back(id);
        }
        ++submitted;
        if (k % 16 == 0) std::this_thread::yield();
      }
    });
  }
  std::thread canceller([&] {
    unsigned x = 12345;
    while (!done.load()) {
      x = x * 1103515245u + 12345u;
      cancel[(x >> 8) % kTasks].store(true);
      std::this_thread::yield();
    }
  });
  while (submitted.load() < kTasks / 2) std::this_thread::yield();
  batcher->StopAccepting();
  for (auto& th : threads) th.join();
  done = true;
  canceller.join();

  int n_accepted = 0;
  for (const auto& a : accepted) n_accepted += static_cast<int>(a.size());
  ASSERT_TRUE(model.WaitForAnswers(n_accepted));
  batcher.reset();  // joins the workers
  const auto answers = model.answers();
  const auto failures = model.failures();
  for (const auto& ids : accepted) {
    for (int id : ids) EXPECT_EQ(answers.count(id) ? answers.at(id) : 0, 1) << "task " << id;
  }
  for (const auto& ids : refused) {
    for (int id : ids) EXPECT_EQ(answers.count(id), 0u) << "refused task " << id << " answered";
  }
  for (const auto& [id, status] : failures) {
    EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << "task " << id << ": " << status;
  }
  EXPECT_GT(n_accepted, 0);
  EXPECT_LT(n_accepted, kTasks) << "StopAccepting halfway should refuse some tasks";
}

}  // namespace
}  // namespace ghostserve::batcher
