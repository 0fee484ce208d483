// The serving core with a fake model, a fake preprocessor and a fake clock:
// no LibTorch, no image codecs, no sleeps. Waits are on events, bounded by
// a generous timeout that only a broken feature reaches.
#include "server/core/inference_core.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "server/core/servable_registry.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_model.h"

namespace ghostserve::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kClasses = 3;
constexpr int64_t kSide = 16;  // images are [1, 16, 16], the smallest crop
constexpr int64_t kFloats = kSide * kSide;
constexpr int64_t kLongDelayUs = 10'000'000;

// Preprocessed images [N, 1, kSide, kSide], image i filled with values[i].
std::vector<float> Images(const std::vector<float>& values) {
  std::vector<float> out;
  for (float v : values) out.insert(out.end(), kFloats, v);
  return out;
}

// Stands in for decoding: "<number>" fills the image with that number,
// anything else is an undecodable image. Can be held at a gate.
class FakePreprocessor {
 public:
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool WaitForWaiting(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, FakeModelControl::kEventTimeout, [&] { return waiting_ >= n; });
  }
  int calls() const { return calls_.load(); }
  // The image `encoded` waits at a gate of its own until ReleaseImage.
  void HoldImage(const std::string& encoded) {
    std::lock_guard<std::mutex> lock(mu_);
    held_image_ = encoded;
  }
  void ReleaseImage() {
    std::lock_guard<std::mutex> lock(mu_);
    held_image_.clear();
    cv_.notify_all();
  }

  PreprocessFn Fn() {
    return [this](std::string_view encoded, float* hwc) {
      ++calls_;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ++waiting_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return open_ && held_image_ != encoded; });
        --waiting_;
      }
      float v;
      if (!absl::SimpleAtof(absl::string_view(encoded.data(), encoded.size()), &v))
        return absl::InvalidArgumentError("cannot decode image");
      for (int64_t i = 0; i < kFloats; ++i) hwc[i] = v;
      return absl::OkStatus();
    };
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  std::string held_image_;
  int waiting_ = 0;
  std::atomic<int> calls_{0};
};

// One request's answer, awaited.
class Answer {
 public:
  InferDone Done() {
    return [p = promise_](absl::StatusOr<InferResult> r) { p->set_value(std::move(r)); };
  }
  bool Ready() const {
    return future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  absl::StatusOr<InferResult> Get() {
    EXPECT_EQ(future_.wait_for(FakeModelControl::kEventTimeout), std::future_status::ready);
    return future_.get();
  }

 private:
  std::shared_ptr<std::promise<absl::StatusOr<InferResult>>> promise_ =
      std::make_shared<std::promise<absl::StatusOr<InferResult>>>();
  std::shared_future<absl::StatusOr<InferResult>> future_ = promise_->get_future().share();
};

class InferenceCoreTest : public ::testing::Test {
 protected:
  void Start(int max_batch = 4, int64_t max_delay_us = kLongDelayUs, int max_queue = 64,
             int preprocess_queue = 64) {
    CoreOptions& o = options_;
    o.batching.max_batch_size = max_batch;
    o.batching.max_delay_us = max_delay_us;
    o.batching.max_queue_size = max_queue;
    o.preprocess_threads = 1;
    o.preprocess_queue = preprocess_queue;
    o.max_images_per_request = 8;
    o.limits.max_bytes = 16;
    auto core = InferenceCore::Create(o, &clock_, nullptr,
                                      [](int threads) { FakeModelControl::Threads() = threads; });
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    const absl::Status added =
        core_->AddServable(Spec("m"), std::make_unique<FakeModel>(&model_, 1, kClasses));
    ASSERT_TRUE(added.ok()) << added;
    ASSERT_TRUE(core_->Warmup().ok());
    warmup_forwards_ = model_.started();
  }

  ServableSpec Spec(const std::string& name) {
    ServableSpec s;
    s.name = name;
    s.preprocess.resize_shorter = 0;
    s.preprocess.crop_size = kSide;
    s.preprocess.channels = 1;
    s.preprocess.mean = {0};
    s.preprocess.std = {1};
    s.labels = {"a", "b", "c"};
    s.preprocess_fn = preprocessor_.Fn();
    return s;
  }

  // One encoded image (see FakePreprocessor).
  std::shared_ptr<Answer> Send(const std::string& image, int64_t deadline_us = 0,
                               std::function<bool()> cancelled = nullptr,
                               const std::string& model = "m", int priority = 0) {
    images_.push_back(std::make_unique<std::string>(image));
    InferRequest r;
    r.model = model;
    r.priority = priority;
    r.encoded.push_back(*images_.back());
    r.deadline_us = deadline_us;
    r.is_cancelled = std::move(cancelled);
    auto a = std::make_shared<Answer>();
    core_->Infer(std::move(r), a->Done());
    return a;
  }

  // Waits until `n` images of model "m" wait in its batch queue.
  bool WaitForQueued(int n) {
    const auto s = *core_->Find("m");
    const auto until = std::chrono::steady_clock::now() + FakeModelControl::kEventTimeout;
    while (s->batcher().QueueDepth() < n) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::yield();
    }
    return true;
  }

  // Batch sizes the model saw after warm-up.
  std::vector<int> Batches() const {
    auto all = model_.batch_sizes();
    return {all.begin() + warmup_forwards_, all.end()};
  }

  static void ExpectLogits(const absl::StatusOr<InferResult>& r, std::vector<float> first) {
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->images(), static_cast<int64_t>(first.size()));
    for (size_t i = 0; i < first.size(); ++i) {
      for (int64_t j = 0; j < kClasses; ++j) {
        EXPECT_EQ(r->row(i)[j], first[i] + j) << "image " << i << " class " << j;
      }
    }
  }

  // Start() sets the batching fields; a test may set others first.
  CoreOptions options_;
  batcher::FakeClock clock_;
  FakeModelControl model_;
  FakePreprocessor preprocessor_;
  std::vector<std::unique_ptr<std::string>> images_;
  int warmup_forwards_ = 0;
  std::unique_ptr<InferenceCore> core_;  // last: destroyed first
};

TEST_F(InferenceCoreTest, WarmupRunsEveryBatchSizeThenThePowersOfTwo) {
  Start(/*max_batch=*/4);
  EXPECT_THAT(model_.batch_sizes(), ElementsAre(1, 2, 3, 4, 1, 2, 4));
  EXPECT_TRUE(core_->ready());
}

TEST_F(InferenceCoreTest, WarmupCanSkipBatchSizesBetweenPowersOfTwo) {
  options_.warm_every_batch_size = false;
  Start(/*max_batch=*/4);
  EXPECT_THAT(model_.batch_sizes(), ElementsAre(1, 2, 4, 1, 2, 4));
}

// The adaptive thread plan: warm-up times a lone batch single-threaded and
// with all threads; a lone request then gets all threads only if that was at
// least 10% faster.
TEST_F(InferenceCoreTest, AdaptivePlanGivesALoneBatchAllThreadsWhereWarmUpFoundThemFaster) {
  options_.executors = 2;
  options_.adaptive_threads = true;
  model_.SetLatency(&clock_, 1000);
  model_.SetMultiThreadLatency(600);
  Start(/*max_batch=*/1, /*max_delay_us=*/0);
  const auto cost = (*core_->Find("m"))->lone_batch_cost();
  EXPECT_EQ(cost.single_thread_us, 1000);
  EXPECT_EQ(cost.all_threads_us, 600);
  EXPECT_TRUE(cost.use_all_threads);
  ExpectLogits(Send("3")->Get(), {3});
  EXPECT_EQ(model_.forward_threads().back(), 2);
  EXPECT_TRUE(core_->executor().wide());
}

TEST_F(InferenceCoreTest, AdaptivePlanKeepsALoneBatchSingleThreadedWhereAllThreadsGainLittle) {
  options_.executors = 2;
  options_.adaptive_threads = true;
  model_.SetLatency(&clock_, 1000);
  model_.SetMultiThreadLatency(950);  // under 10% faster
  Start(/*max_batch=*/1, /*max_delay_us=*/0);
  const auto cost = (*core_->Find("m"))->lone_batch_cost();
  EXPECT_EQ(cost.all_threads_us, 950);
  EXPECT_FALSE(cost.use_all_threads);
  ExpectLogits(Send("3")->Get(), {3});
  EXPECT_EQ(model_.forward_threads().back(), 1);
}

TEST_F(InferenceCoreTest, EachRequestGetsItsOwnLogitsAndPredictions) {
  Start();
  InferRequest r;
  r.model = "m";
  r.top_k = 2;
  const std::vector<float> tensor = Images({1, 5});
  r.tensor = {tensor.data(), {2, 1, kSide, kSide}};
  Answer a;
  core_->Infer(std::move(r), a.Done());
  const auto& got = a.Get();
  ExpectLogits(got, {1, 5});
  ASSERT_EQ(got->predictions.size(), 2u);
  EXPECT_EQ(got->predictions[1][0].class_index, 2);
  EXPECT_EQ(got->predictions[1][0].label, "c");
  EXPECT_EQ(got->model, "m");
  ExpectLogits(Send("7")->Get(), {7});
}

TEST_F(InferenceCoreTest, FullBatchLeavesWithoutWaitingForTheDelay) {
  Start(/*max_batch=*/2);
  // "9" stays in preprocessing, so the batcher knows more is coming and only
  // a full batch may leave; the clock never moves.
  preprocessor_.HoldImage("9");
  preprocessor_.Hold();  // all three are accepted before any is decoded
  auto a = Send("1"), b = Send("2"), held = Send("9");
  preprocessor_.Release();
  ExpectLogits(a->Get(), {1});
  ExpectLogits(b->Get(), {2});
  EXPECT_FALSE(held->Ready());
  preprocessor_.ReleaseImage();
  ExpectLogits(held->Get(), {9});
  EXPECT_THAT(Batches(), ElementsAre(2, 1));
}

TEST_F(InferenceCoreTest, PartialBatchWaitsForImagesStillPreprocessing) {
  Start(/*max_batch=*/4);
  preprocessor_.Hold();
  auto a = Send("1"), b = Send("2"), c = Send("3");
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  preprocessor_.Release();
  ExpectLogits(a->Get(), {1});
  ExpectLogits(b->Get(), {2});
  ExpectLogits(c->Get(), {3});
  // One batch: the batcher knew more images were on their way.
  EXPECT_THAT(Batches(), ElementsAre(3));
}

TEST_F(InferenceCoreTest, PartialBatchLeavesAtMaxDelay) {
  Start(/*max_batch=*/4, /*max_delay_us=*/1000);
  preprocessor_.Hold();
  InferRequest r;
  r.model = "m";
  const std::vector<float> t = Images({4});
  r.tensor = {t.data(), {1, 1, kSide, kSide}};
  Answer a;
  auto held = Send("9");  // keeps "more coming" true while preprocessing
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  core_->Infer(std::move(r), a.Done());
  clock_.Advance(1000);
  ExpectLogits(a.Get(), {4});
  EXPECT_FALSE(held->Ready());
  preprocessor_.Release();
  ExpectLogits(held->Get(), {9});
  EXPECT_THAT(Batches(), ElementsAre(1, 1));
}

TEST_F(InferenceCoreTest, ExpiredInQueueIsDeadlineExceededAndNeverRuns) {
  Start(/*max_batch=*/1);
  model_.Hold();
  auto running = Send("1");
  ASSERT_TRUE(model_.WaitForStarted(warmup_forwards_ + 1));
  auto late = Send("2", clock_.NowMicros() + 100);
  clock_.Advance(200);
  model_.Release();
  ExpectLogits(running->Get(), {1});
  EXPECT_EQ(late->Get().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(Batches(), ElementsAre(1));
}

TEST_F(InferenceCoreTest, ExpiredBeforePreprocessingIsNeverDecoded) {
  Start();
  preprocessor_.Hold();
  auto first = Send("1");
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  auto late = Send("2", clock_.NowMicros() + 100);
  clock_.Advance(200);
  preprocessor_.Release();
  const auto& r = late->Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("before preprocessing"));
  ExpectLogits(first->Get(), {1});
  EXPECT_EQ(preprocessor_.calls(), 1);
}

TEST_F(InferenceCoreTest, CancelledWhileQueuedNeverRuns) {
  Start(/*max_batch=*/1);
  model_.Hold();
  auto running = Send("1");
  ASSERT_TRUE(model_.WaitForStarted(warmup_forwards_ + 1));
  std::atomic<bool> gone{false};
  auto cancelled = Send("2", 0, [&gone] { return gone.load(); });
  gone = true;
  model_.Release();
  EXPECT_EQ(cancelled->Get().status().code(), absl::StatusCode::kCancelled);
  ExpectLogits(running->Get(), {1});
  EXPECT_THAT(Batches(), ElementsAre(1));
}

TEST_F(InferenceCoreTest, OverTheModelBudgetIsRefusedOnArrivalAndNeverDecoded) {
  // Budget: 1 waiting + 1 running batch of 1.
  Start(/*max_batch=*/1, kLongDelayUs, /*max_queue=*/1);
  preprocessor_.Hold();
  auto decoding = Send("1");
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  auto waiting = Send("2");  // waits for the preprocessing thread
  auto refused = Send("3");
  ASSERT_TRUE(refused->Ready()) << "refused on the caller's thread, at once";
  const auto r = refused->Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      r.status().message(),
      HasSubstr("model m queue is full (2 images accepted and not yet answered, budget 2)"));
  preprocessor_.Release();
  ExpectLogits(decoding->Get(), {1});
  ExpectLogits(waiting->Get(), {2});
  EXPECT_EQ(preprocessor_.calls(), 2) << "the refused image was decoded";
  // Answers give the budget back.
  ExpectLogits(Send("4")->Get(), {4});
}

TEST_F(InferenceCoreTest, OverTheByteBudgetIsRefusedOnArrivalAndNeverDecoded) {
  options_.max_input_bytes = 5;
  Start();
  preprocessor_.Hold();
  auto held = Send("1234");  // 4 bytes held until answered
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  const auto r = Send("56")->Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("server holds 4 bytes of request inputs"));
  auto fits = Send("7");
  preprocessor_.Release();
  ExpectLogits(held->Get(), {1234});
  ExpectLogits(fits->Get(), {7});
  EXPECT_EQ(preprocessor_.calls(), 2);
}

TEST_F(InferenceCoreTest, RunningBatchCountsAgainstTheModelBudget) {
  Start(/*max_batch=*/1, kLongDelayUs, /*max_queue=*/1);
  model_.Hold();
  auto running = Send("1");
  ASSERT_TRUE(model_.WaitForStarted(warmup_forwards_ + 1));
  auto queued = Send("2");
  auto refused = Send("3");
  const auto r = refused->Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("queue is full"));
  model_.Release();
  ExpectLogits(running->Get(), {1});
  ExpectLogits(queued->Get(), {2});
}

TEST_F(InferenceCoreTest, FullPreprocessingQueueRefusesWithUnavailable) {
  Start(4, kLongDelayUs, 64, /*preprocess_queue=*/1);
  preprocessor_.Hold();
  auto decoding = Send("1");
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  auto waiting = Send("2");
  auto refused = Send("3");
  EXPECT_EQ(refused->Get().status().code(), absl::StatusCode::kUnavailable);
  preprocessor_.Release();
  ExpectLogits(decoding->Get(), {1});
  ExpectLogits(waiting->Get(), {2});
}

TEST_F(InferenceCoreTest, OneFailedImageLeavesTheRestOfItsBatchServed) {
  Start(/*max_batch=*/4);
  preprocessor_.Hold();
  auto a = Send("1"), bad = Send("not an image"), c = Send("3");
  preprocessor_.Release();
  EXPECT_EQ(bad->Get().status().code(), absl::StatusCode::kInvalidArgument);
  // Rows 0 and 2 of one slab: gathered into one batch around the hole.
  ExpectLogits(a->Get(), {1});
  ExpectLogits(c->Get(), {3});
  EXPECT_THAT(Batches(), ElementsAre(2));
}

TEST_F(InferenceCoreTest, AFailedForwardFailsOnlyItsBatch) {
  Start(/*max_batch=*/1);
  model_.FailNext(absl::InternalError("engine broke"));
  const auto& r = Send("1")->Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("engine broke"));
  ExpectLogits(Send("2")->Get(), {2});
}

TEST_F(InferenceCoreTest, OneImageFailingFailsItsWholeRequest) {
  Start();
  images_.push_back(std::make_unique<std::string>("1"));
  images_.push_back(std::make_unique<std::string>("junk"));
  InferRequest r;
  r.model = "m";
  r.encoded = {*images_[0], *images_[1]};
  Answer a;
  core_->Infer(std::move(r), a.Done());
  EXPECT_EQ(a.Get().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(InferenceCoreTest, DrainRefusesNewWorkAndFinishesAccepted) {
  Start(/*max_batch=*/1);
  model_.Hold();
  auto running = Send("1");
  ASSERT_TRUE(model_.WaitForStarted(warmup_forwards_ + 1));
  auto queued = Send("2");
  core_->StopAccepting();
  const auto& refused = Send("3")->Get();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("draining"));
  EXPECT_EQ(core_->inflight(), 2);
  EXPECT_FALSE(core_->WaitIdle(0));
  model_.Release();
  EXPECT_TRUE(core_->WaitIdle(10'000'000));
  ExpectLogits(running->Get(), {1});
  ExpectLogits(queued->Get(), {2});
}

TEST_F(InferenceCoreTest, TimingPartsAddUpToTheTotal) {
  Start(/*max_batch=*/1);
  model_.SetLatency(&clock_, 500);
  preprocessor_.Hold();
  auto first = Send("1");
  ASSERT_TRUE(preprocessor_.WaitForWaiting(1));
  auto second = Send("2");  // waits for the one preprocessing thread
  clock_.Advance(300);
  preprocessor_.Release();
  const auto a = first->Get(), b = second->Get();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->timing.preprocess_wait_us, 0);
  EXPECT_EQ(a->timing.preprocess_us, 300);
  EXPECT_EQ(a->timing.inference_us, 500);
  // At least the 300 us the first held the thread (more if the first's
  // batch ran, advancing the clock, before the thread came free).
  EXPECT_GE(b->timing.preprocess_wait_us, 300);
  EXPECT_EQ(b->timing.inference_us, 500);
  for (const auto* r : {&*a, &*b}) {
    const Timing& t = r->timing;
    EXPECT_EQ(t.preprocess_wait_us + t.preprocess_us + t.queue_us + t.inference_us, t.total_us);
    EXPECT_EQ(r->batch_size, 1);
  }
}

TEST_F(InferenceCoreTest, HighPriorityRunsAheadOfNormalWaitingImages) {
  Start(/*max_batch=*/1);
  model_.Hold();
  auto running = Send("1");
  ASSERT_TRUE(model_.WaitForStarted(warmup_forwards_ + 1));
  auto b = Send("2"), c = Send("3");
  auto high = Send("4", 0, nullptr, "m", /*priority=*/1);
  auto high2 = Send("5", 0, nullptr, "m", /*priority=*/1);
  // All four decoded and queued before the model frees up.
  ASSERT_TRUE(WaitForQueued(4));
  model_.Release();
  for (auto* a : {&running, &b, &c, &high, &high2}) ASSERT_TRUE((*a)->Get().ok());
  const auto firsts = model_.batch_firsts();
  EXPECT_THAT(std::vector<float>(firsts.begin() + warmup_forwards_, firsts.end()),
              ElementsAre(1, 4, 5, 2, 3));
}

TEST_F(InferenceCoreTest, UnreachableDeadlineIsRefusedOnArrivalAndNeverDecoded) {
  // Warm-up teaches the core that a batch takes 500 us.
  model_.SetLatency(&clock_, 500);
  Start(/*max_batch=*/1);
  const auto r = Send("1", clock_.NowMicros() + 100)->Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("deadline cannot be met"));
  EXPECT_EQ(preprocessor_.calls(), 0);
  ExpectLogits(Send("2", clock_.NowMicros() + 10'000)->Get(), {2});
}

TEST_F(InferenceCoreTest, PartialBatchLeavesEarlyToMeetItsDeadline) {
  model_.SetLatency(&clock_, 500);
  Start(/*max_batch=*/4);
  preprocessor_.HoldImage("9");  // more is coming: only a deadline can cut the batch
  preprocessor_.Hold();
  auto urgent = Send("1", clock_.NowMicros() + 2000);
  auto held = Send("9");
  preprocessor_.Release();
  // Due at deadline - predicted batch time (500 us): 1500 us from now, long
  // before the 10 s max delay.
  clock_.Advance(1500);
  ExpectLogits(urgent->Get(), {1});
  preprocessor_.ReleaseImage();
  ExpectLogits(held->Get(), {9});
}

TEST_F(InferenceCoreTest, ValidationHasOneMessagePerCondition) {
  Start();
  auto expect = [&](InferRequest r, absl::StatusCode code, const std::string& text) {
    Answer a;
    core_->Infer(std::move(r), a.Done());
    const auto& got = a.Get();
    EXPECT_EQ(got.status().code(), code) << got.status();
    EXPECT_THAT(got.status().message(), HasSubstr(text));
  };
  const std::string big(17, '1'), ok = "1";
  InferRequest base;
  base.model = "m";
  base.encoded = {ok};
  InferRequest r = base;
  r.model = "nope";
  expect(r, absl::StatusCode::kNotFound, "unknown model 'nope'; served models: m");
  r = base;
  r.version = "2";
  expect(r, absl::StatusCode::kNotFound, "model 'm' has no version '2' (versions: 1)");
  r = base;
  r.encoded.clear();
  expect(r, absl::StatusCode::kInvalidArgument, "request carries no image");
  r = base;
  r.encoded.assign(9, ok);
  expect(r, absl::StatusCode::kResourceExhausted, "request carries 9 images; the limit is 8");
  r = base;
  r.top_k = 4;
  expect(r, absl::StatusCode::kInvalidArgument, "top_k 4 exceeds the 3 classes of model m");
  r = base;
  r.encoded = {ok, ""};
  expect(r, absl::StatusCode::kInvalidArgument, "image 1 is empty");
  r = base;
  r.encoded = {big};
  expect(r, absl::StatusCode::kResourceExhausted, "image 0 is 17 bytes; the limit is 16");
  r = base;
  const std::vector<float> t(12, 0.f);
  r.encoded.clear();
  r.tensor = {t.data(), {1, 3, 2, 2}};
  expect(r, absl::StatusCode::kInvalidArgument,
         "input tensor has shape [1, 3, 2, 2]; model m takes float [N, 1, 16, 16]");
  EXPECT_EQ(preprocessor_.calls(), 0);
  EXPECT_EQ(core_->inflight(), 0);
}

TEST_F(InferenceCoreTest, ServableAddedAfterWarmupIsWarmedBeforeTraffic) {
  Start(/*max_batch=*/2);
  const int before = model_.started();
  FakeModelControl second;
  ASSERT_TRUE(
      core_->AddServable(Spec("n"), std::make_unique<FakeModel>(&second, 1, kClasses)).ok());
  EXPECT_THAT(second.batch_sizes(), ElementsAre(1, 2, 1, 2));
  ExpectLogits(Send("6", 0, nullptr, "n")->Get(), {6});
  EXPECT_EQ(model_.started(), before);
  EXPECT_EQ(core_->AddServable(Spec("n"), std::make_unique<FakeModel>(&second, 1, kClasses)).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(InferenceCoreTest, RemovingAServableWaitsForItsRequests) {
  Start(/*max_batch=*/1);
  model_.Hold();
  auto running = Send("1");
  ASSERT_TRUE(model_.WaitForStarted(warmup_forwards_ + 1));
  auto queued = Send("2");
  std::promise<absl::Status> removed;
  std::thread remover([&] { removed.set_value(core_->RemoveServable("m")); });
  // Unregistered at once: new requests no longer find it.
  absl::StatusCode code = absl::StatusCode::kOk;
  while (code != absl::StatusCode::kNotFound) code = core_->Find("m").status().code();
  EXPECT_EQ(Send("3")->Get().status().code(), absl::StatusCode::kNotFound);
  model_.Release();
  ExpectLogits(running->Get(), {1});
  ExpectLogits(queued->Get(), {2});
  remover.join();
  EXPECT_TRUE(removed.get_future().get().ok());
  EXPECT_TRUE(core_->servables().empty());
}

TEST(ServableRegistryTest, ReplaceRoutesNewRequestsAtOnceAndWaitsForTheOld) {
  batcher::FakeClock clock;
  FakeModelControl control;
  auto make = [&](const std::string& name) {
    ServableSpec spec;
    spec.name = name;
    spec.preprocess.channels = 1;
    spec.preprocess.mean = {0};
    spec.preprocess.std = {1};
    auto s = Servable::Create(spec, std::make_unique<FakeModel>(&control, 1, kClasses),
                              batcher::BatcherOptions(), &clock, nullptr,
                              [](Servable*, std::vector<std::unique_ptr<ImageTask>>) {});
    EXPECT_TRUE(s.ok()) << s.status();
    return std::shared_ptr<Servable>(std::move(*s));
  };
  ServableRegistry registry;
  const std::shared_ptr<Servable> old_servable = make("m");
  ASSERT_TRUE(registry.Add(old_servable).ok());
  EXPECT_EQ(registry.Add(make("m")).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Replace(make("x")).status().code(), absl::StatusCode::kNotFound);

  auto running = registry.Acquire("m");  // a request still on the old servable
  ASSERT_TRUE(running.ok());
  const std::shared_ptr<Servable> new_servable = make("m");
  std::promise<absl::StatusOr<std::shared_ptr<Servable>>> replaced;
  auto replaced_future = replaced.get_future();
  std::thread replacer([&] { replaced.set_value(registry.Replace(new_servable)); });
  // New requests reach the new servable at once...
  while ((*registry.Find("m")).get() != new_servable.get()) {
  }
  auto next = registry.Acquire("m");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->get(), new_servable.get());
  // ...while Replace cannot return before the old one's request ends.
  EXPECT_EQ(replaced_future.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  *running = ServableUse();
  const auto old = replaced_future.get();
  replacer.join();
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->get(), old_servable.get());
}

TEST(InferenceCoreOptionsTest, RejectsBadOptions) {
  batcher::FakeClock clock;
  CoreOptions o;
  o.executors = 0;
  EXPECT_EQ(InferenceCore::Create(o, &clock, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = CoreOptions();
  EXPECT_EQ(InferenceCore::Create(o, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(InferenceCoreOptionsTest, ServableMustFitItsModel) {
  batcher::FakeClock clock;
  FakeModelControl control;
  auto core = InferenceCore::Create(CoreOptions(), &clock, nullptr);
  ASSERT_TRUE(core.ok());
  ServableSpec spec;
  spec.name = "gray";
  spec.preprocess.channels = 1;
  spec.preprocess.mean = {0};
  spec.preprocess.std = {1};
  EXPECT_THAT((*core)->AddServable(spec, std::make_unique<FakeModel>(&control, 3, 2)).message(),
              HasSubstr("preprocessing gives 1 channels, the network takes 3"));
  spec.preprocess.channels = 3;
  spec.preprocess.mean = {0, 0, 0};
  spec.preprocess.std = {1, 1, 1};
  spec.labels = {"only one"};
  EXPECT_THAT((*core)->AddServable(spec, std::make_unique<FakeModel>(&control, 3, 2)).message(),
              HasSubstr("1 labels for 2 classes"));
}

}  // namespace
}  // namespace ghostserve::core

namespace ghostserve::core {
namespace {

TEST(TopKTest, RanksByLogitEvenWhereTheSoftmaxUnderflows) {
  // An untrained model's logits: every probability but the best is 0.
  const float logits[] = {-1e6f, 3e6f, 2e5f, -7e5f};
  const auto top = TopK(logits, 4, 3, {"a", "b", "c", "d"});
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].class_index, 1);
  EXPECT_EQ(top[1].class_index, 2);
  EXPECT_EQ(top[2].class_index, 3);
  EXPECT_EQ(top[1].label, "c");
  EXPECT_FLOAT_EQ(top[0].score, 1.0f);
  EXPECT_FLOAT_EQ(top[1].score, 0.0f);
}

}  // namespace
}  // namespace ghostserve::core
