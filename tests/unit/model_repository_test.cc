// The model repository over a real directory, with fake models (no
// LibTorch, so it runs under TSan): version policies, loading and switching
// traffic to a new version, reload of changed files, a broken version that
// leaves the old one serving, unload draining running requests, models
// removed from disk, explicit and poll control.
#include "server/core/model_repository.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "server/core/inference_core.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_model.h"

namespace ghostserve::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

#define ASSERT_OK(expr)             \
  do {                              \
    const absl::Status _s = (expr); \
    ASSERT_TRUE(_s.ok()) << _s;     \
  } while (0)

constexpr int64_t kClasses = 3;
constexpr int kSide = 16;

void Write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A version policy in the fake config.json: "latest N", "all" or
// "specific 1,3"; anything else is a bad config.
absl::StatusOr<VersionPolicy> ReadFakePolicy(const std::string& model_dir) {
  std::ifstream in(fs::path(model_dir) / "config.json");
  std::string kind;
  std::string arg;
  in >> kind >> arg;
  VersionPolicy p;
  if (kind == "latest") {
    p.kind = VersionPolicy::Kind::kLatest;
    if (!absl::SimpleAtoi(arg, &p.num_versions)) p.num_versions = 1;
  } else if (kind == "all") {
    p.kind = VersionPolicy::Kind::kAll;
  } else if (kind == "specific") {
    p.kind = VersionPolicy::Kind::kSpecific;
    for (absl::string_view v : absl::StrSplit(arg, ',')) {
      int64_t n = 0;
      if (absl::SimpleAtoi(v, &n)) p.versions.push_back(n);
    }
  } else {
    return absl::InvalidArgumentError("config.json: bad policy");
  }
  return p;
}

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        fs::path(::testing::TempDir()) /
        ("repo_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    CoreOptions o;
    o.batching.max_batch_size = 1;
    o.batching.max_delay_us = 0;
    o.preprocess_threads = 1;
    o.executors = 1;
    auto core = InferenceCore::Create(o, &clock_, nullptr);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    ASSERT_TRUE(core_->Warmup().ok());
  }
  void TearDown() override {
    repository_.reset();
    core_.reset();
    fs::remove_all(root_);
  }

  // A loader of fake models: a version directory holding a file "broken"
  // fails to load; every load is counted.
  RepositoryLoader Loader() {
    RepositoryLoader loader;
    loader.read_policy = [](const std::string&, const std::string& model_dir) {
      return ReadFakePolicy(model_dir);
    };
    loader.load = [this](const std::string&, int64_t, const std::string&,
                         const std::string& version_dir) -> absl::StatusOr<LoadedVersion> {
      ++loads_;
      if (fs::exists(fs::path(version_dir) / "broken")) {
        return absl::InvalidArgumentError("weights do not fit the architecture");
      }
      LoadedVersion out;
      out.spec.preprocess.resize_shorter = 0;
      out.spec.preprocess.crop_size = kSide;
      out.spec.preprocess.channels = 1;
      out.spec.preprocess.mean = {0};
      out.spec.preprocess.std = {1};
      out.spec.preprocess_fn = [](std::string_view encoded, float* hwc) {
        for (int i = 0; i < kSide * kSide; ++i) hwc[i] = 0;
        hwc[0] = static_cast<float>(encoded[0] - '0');
        return absl::OkStatus();
      };
      out.model = std::make_unique<FakeModel>(&model_, 1, kClasses);
      return out;
    };
    return loader;
  }

  void Open(ModelControl control, std::vector<std::string> startup = {"*"}) {
    RepositoryOptions o;
    o.root = root_.string();
    o.control = control;
    o.poll_ms = 3'600'000;  // tests poll by hand
    o.startup_models = std::move(startup);
    metrics_ = std::make_unique<metrics::ServerMetrics>(&registry_, std::vector<std::string>{});
    auto r = ModelRepository::Create(o, Loader(), core_.get(), metrics_.get(),
                                     [this](const std::string& line) {
                                       std::lock_guard<std::mutex> lock(log_mu_);
                                       log_.push_back(line);
                                     });
    ASSERT_TRUE(r.ok()) << r.status();
    repository_ = std::move(*r);
  }

  void AddVersion(const std::string& model, int64_t version, bool broken = false) {
    Write(root_ / model / std::to_string(version) / "weights.bin", "w" + std::to_string(version));
    if (broken) Write(root_ / model / std::to_string(version) / "broken", "");
  }

  static absl::Status Wait(const std::function<void(ModelRepository::Done)>& call) {
    auto p = std::make_shared<std::promise<absl::Status>>();
    auto f = p->get_future();
    call([p](absl::Status s) { p->set_value(s); });
    EXPECT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    return f.get();
  }
  absl::Status Poll() {
    return Wait([&](ModelRepository::Done d) { repository_->Poll(std::move(d)); });
  }

  std::vector<int64_t> Versions(const std::string& model) const { return core_->versions(model); }

  // The version that answers a request naming `version` ("" = latest).
  absl::StatusOr<int64_t> Answerer(const std::string& model, const std::string& version = "") {
    auto p = std::make_shared<std::promise<absl::StatusOr<InferResult>>>();
    InferRequest r;
    r.model = model;
    r.version = version;
    static const std::string kImage = "5";
    r.encoded.push_back(kImage);
    core_->Infer(std::move(r), [p](absl::StatusOr<InferResult> res) { p->set_value(res); });
    auto res = p->get_future().get();
    if (!res.ok()) return res.status();
    EXPECT_EQ(res->row(0)[0], 5.0f);
    return res->version;
  }

  std::string State(const std::string& model, int64_t version) const {
    for (const auto& s : repository_->Index()) {
      if (s.name == model && s.version == version) return s.state + ":" + s.reason;
    }
    return "absent";
  }

  double Counter(const std::string& name, const std::string& outcome) const {
    for (const auto& f : registry_.Collect()) {
      if (f.name != name) continue;
      for (const auto& m : f.metric) {
        bool match = outcome.empty();
        for (const auto& l : m.label) match |= l.name == "outcome" && l.value == outcome;
        if (match) return m.counter.value;
      }
    }
    return 0;
  }

  fs::path root_;
  batcher::FakeClock clock_;
  FakeModelControl model_;
  std::unique_ptr<InferenceCore> core_;
  prometheus::Registry registry_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<ModelRepository> repository_;
  std::atomic<int> loads_{0};
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST(VersionPolicyTest, SelectsLatestAllOrSpecific) {
  const std::vector<int64_t> disk{1, 2, 5, 9};
  VersionPolicy p;
  EXPECT_EQ(p.Select(disk), (std::vector<int64_t>{9}));
  p.num_versions = 2;
  EXPECT_EQ(p.Select(disk), (std::vector<int64_t>{5, 9}));
  p.num_versions = 10;
  EXPECT_EQ(p.Select(disk), disk);
  p.kind = VersionPolicy::Kind::kAll;
  EXPECT_EQ(p.Select(disk), disk);
  p.kind = VersionPolicy::Kind::kSpecific;
  p.versions = {2, 3, 9};
  EXPECT_EQ(p.Select(disk), (std::vector<int64_t>{2, 9}));
  EXPECT_TRUE(p.Select({}).empty());
}

TEST_F(ModelRepositoryTest, ServesTheLatestVersionAndSwitchesToANewOne) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  AddVersion("m", 2);
  Open(ModelControl::kPoll);
  ASSERT_OK(repository_->LoadInitial());
  EXPECT_EQ(Versions("m"), (std::vector<int64_t>{2}));
  EXPECT_EQ(*Answerer("m"), 2);
  repository_->Start();

  AddVersion("m", 3);
  ASSERT_TRUE(Poll().ok());
  EXPECT_EQ(Versions("m"), (std::vector<int64_t>{3}));
  EXPECT_EQ(*Answerer("m"), 3);
  EXPECT_EQ(*Answerer("m", "3"), 3);
  EXPECT_THAT(Answerer("m", "2").status().message(), HasSubstr("has no version '2'"));
  EXPECT_EQ(State("m", 3), "READY:");
  EXPECT_EQ(Counter("ghostserve_model_loads_total", "ok"), 2);
  EXPECT_EQ(Counter("ghostserve_model_unloads_total", ""), 1);
  // Nothing changed: nothing is loaded again.
  const int loads = loads_;
  ASSERT_TRUE(Poll().ok());
  EXPECT_EQ(loads_, loads);
}

TEST_F(ModelRepositoryTest, AllVersionsServedAndEachCanBeNamed) {
  Write(root_ / "m" / "config.json", "all");
  AddVersion("m", 1);
  AddVersion("m", 4);
  Open(ModelControl::kNone);
  ASSERT_OK(repository_->LoadInitial());
  EXPECT_EQ(Versions("m"), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(*Answerer("m", "1"), 1);
  EXPECT_EQ(*Answerer("m"), 4);
  // Polling is not this mode's job; load and unload are refused.
  EXPECT_EQ(Wait([&](auto d) { repository_->Load("m", d); }).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelRepositoryTest, ABrokenVersionLeavesTheOldOneServing) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kPoll);
  ASSERT_OK(repository_->LoadInitial());
  repository_->Start();
  AddVersion("m", 2, /*broken=*/true);
  const absl::Status s = Poll();
  EXPECT_THAT(s.message(), HasSubstr("do not fit"));
  EXPECT_EQ(Versions("m"), (std::vector<int64_t>{1}));
  EXPECT_EQ(*Answerer("m"), 1);
  EXPECT_EQ(State("m", 2), "UNAVAILABLE:weights do not fit the architecture");
  EXPECT_EQ(Counter("ghostserve_model_loads_total", "failed"), 1);
  {
    std::lock_guard<std::mutex> lock(log_mu_);
    EXPECT_THAT(log_, ::testing::Contains(HasSubstr(
                          "model m version 2: load failed: weights do not fit the architecture; "
                          "still serving version(s) 1")));
  }
  // The same broken files are not retried on every poll...
  const int loads = loads_;
  EXPECT_TRUE(Poll().ok());
  EXPECT_EQ(loads_, loads);
  // ...but fixed files are.
  fs::remove(root_ / "m" / "2" / "broken");
  ASSERT_TRUE(Poll().ok());
  EXPECT_EQ(Versions("m"), (std::vector<int64_t>{2}));
  EXPECT_EQ(*Answerer("m"), 2);
}

TEST_F(ModelRepositoryTest, ABrokenConfigLeavesTheModelServing) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kPoll);
  ASSERT_OK(repository_->LoadInitial());
  repository_->Start();
  Write(root_ / "m" / "config.json", "nonsense");
  EXPECT_THAT(Poll().message(), HasSubstr("bad policy"));
  EXPECT_EQ(*Answerer("m"), 1);
  EXPECT_EQ(State("m", 0), "UNAVAILABLE:config.json: bad policy");
  Write(root_ / "m" / "config.json", "latest 1");
  ASSERT_TRUE(Poll().ok());
  EXPECT_EQ(State("m", 0), "absent");
}

TEST_F(ModelRepositoryTest, ChangedFilesAreReloadedInPlace) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kPoll);
  ASSERT_OK(repository_->LoadInitial());
  repository_->Start();
  const Servable* before = core_->Find("m")->get();
  Write(root_ / "m" / "1" / "weights.bin", "retrained, and longer");
  ASSERT_TRUE(Poll().ok());
  EXPECT_NE(core_->Find("m")->get(), before);
  EXPECT_EQ(Versions("m"), (std::vector<int64_t>{1}));
  EXPECT_EQ(*Answerer("m"), 1);
  // Files changed into broken ones: the served version stays, and the same
  // broken files are not reloaded on every poll.
  const Servable* good = core_->Find("m")->get();
  Write(root_ / "m" / "1" / "broken", "");
  EXPECT_THAT(Poll().message(), HasSubstr("do not fit"));
  EXPECT_EQ(core_->Find("m")->get(), good);
  EXPECT_EQ(*Answerer("m"), 1);
  const int loads = loads_;
  EXPECT_TRUE(Poll().ok());
  EXPECT_EQ(loads_, loads);
}

TEST_F(ModelRepositoryTest, UnloadWaitsForRunningRequestsThenRefusesNewOnes) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kExplicit, {"m"});
  ASSERT_OK(repository_->LoadInitial());
  repository_->Start();
  const int warm = model_.started();
  model_.Hold();
  auto running = std::async(std::launch::async, [&] { return Answerer("m"); });
  ASSERT_TRUE(model_.WaitForStarted(warm + 1));
  auto unloaded = std::async(std::launch::async,
                             [&] { return Wait([&](auto d) { repository_->Unload("m", d); }); });
  // Unregistered at once; the unload waits for the running request.
  while (!Versions("m").empty()) std::this_thread::yield();
  EXPECT_EQ(Answerer("m").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unloaded.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  model_.Release();
  EXPECT_EQ(*running.get(), 1);
  EXPECT_TRUE(unloaded.get().ok());
  EXPECT_EQ(State("m", 0), "UNAVAILABLE:unloaded");
  EXPECT_EQ(Wait([&](auto d) { repository_->Unload("m", d); }).code(), absl::StatusCode::kNotFound);
  // Loaded again on request.
  ASSERT_TRUE(Wait([&](auto d) { repository_->Load("m", d); }).ok());
  EXPECT_EQ(*Answerer("m"), 1);
}

TEST_F(ModelRepositoryTest, ExplicitModeLoadsOnlyWhatItIsTold) {
  Write(root_ / "a" / "config.json", "latest 1");
  AddVersion("a", 1);
  Write(root_ / "b" / "config.json", "latest 1");
  AddVersion("b", 1);
  Open(ModelControl::kExplicit, {"a"});
  ASSERT_OK(repository_->LoadInitial());
  repository_->Start();
  EXPECT_EQ(Versions("a"), (std::vector<int64_t>{1}));
  EXPECT_TRUE(Versions("b").empty());
  EXPECT_EQ(State("b", 0), "UNAVAILABLE:unloaded");
  // A new version appears but nothing polls.
  AddVersion("a", 2);
  EXPECT_EQ(*Answerer("a"), 1);
  ASSERT_TRUE(Wait([&](auto d) { repository_->Load("a", d); }).ok());
  EXPECT_EQ(*Answerer("a"), 2);
  EXPECT_EQ(Wait([&](auto d) { repository_->Load("nope", d); }).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Wait([&](auto d) { repository_->Load("../a", d); }).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelRepositoryTest, AModelRemovedFromDiskIsUnloaded) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kPoll);
  ASSERT_OK(repository_->LoadInitial());
  repository_->Start();
  fs::remove_all(root_ / "m");
  Poll();
  EXPECT_TRUE(Versions("m").empty());
  EXPECT_EQ(State("m", 0), "absent");
}

TEST_F(ModelRepositoryTest, RequestsLeftAtShutdownAreAnswered) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kExplicit, {});
  // Not started: refused, not dropped.
  EXPECT_EQ(Wait([&](auto d) { repository_->Load("m", d); }).code(),
            absl::StatusCode::kUnavailable);
  repository_->Start();
  model_.Hold();  // the first load's warm-up blocks the worker
  auto first = std::make_shared<std::promise<absl::Status>>();
  auto second = std::make_shared<std::promise<absl::Status>>();
  repository_->Load("m", [first](absl::Status s) { first->set_value(s); });
  repository_->Load("m", [second](absl::Status s) { second->set_value(s); });
  ASSERT_TRUE(model_.WaitForStarted(1));
  std::thread stopper([&] { repository_->Stop(); });
  // Time for the stopper to mark the worker stopping while the first load
  // holds it; the second load must then be answered, not run or dropped.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  model_.Release();
  stopper.join();
  EXPECT_TRUE(first->get_future().get().ok());
  EXPECT_EQ(second->get_future().get().code(), absl::StatusCode::kUnavailable);
  // After the stop, refused at once.
  EXPECT_THAT(Wait([&](auto d) { repository_->Load("m", d); }).message(),
              HasSubstr("shutting down"));
}

TEST_F(ModelRepositoryTest, WaitingRequestsAreBounded) {
  Write(root_ / "m" / "config.json", "latest 1");
  AddVersion("m", 1);
  Open(ModelControl::kExplicit, {});
  repository_->Start();
  model_.Hold();  // the first load's warm-up holds the worker
  std::vector<std::shared_ptr<std::promise<absl::Status>>> answers;
  auto load = [&] {
    answers.push_back(std::make_shared<std::promise<absl::Status>>());
    repository_->Load("m", [p = answers.back()](absl::Status s) { p->set_value(s); });
  };
  load();
  ASSERT_TRUE(model_.WaitForStarted(1));
  for (size_t i = 0; i < ModelRepository::kMaxQueuedRequests; ++i) load();
  load();  // one too many: refused at once
  auto refused = answers.back()->get_future();
  ASSERT_EQ(refused.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  const absl::Status s = refused.get();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("too many"));
  model_.Release();
  for (size_t i = 0; i + 1 < answers.size(); ++i) {
    EXPECT_TRUE(answers[i]->get_future().get().ok()) << i;
  }
}

}  // namespace
}  // namespace ghostserve::core
