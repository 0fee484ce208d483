#include "server/core/model_repository.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/inference_core.h"
#include "server/core/servable_registry.h"
#include "server/metrics/metrics.h"

namespace ghostserve::core {
namespace {

namespace fs = std::filesystem;

// Version directories of `model_dir`, ascending.
std::vector<int64_t> VersionsOnDisk(const std::string& model_dir) {
  std::vector<int64_t> out;
  std::error_code ec;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    auto v = ParseVersion(it->path().filename().string());
    if (v.ok() && *v > 0) out.push_back(*v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What a version was loaded from: config.json and every file under the
// version directory, by path, size and modification time. A change to any
// gives a different string.
std::string Fingerprint(const std::string& model_dir, const std::string& version_dir) {
  std::vector<std::string> parts;
  std::error_code ec;
  auto add = [&](const fs::path& p) {
    const auto size = fs::file_size(p, ec);
    if (ec) return;
    const auto mtime = fs::last_write_time(p, ec).time_since_epoch().count();
    if (ec) return;
    parts.push_back(absl::StrCat(p.string(), ":", size, ":", mtime));
  };
  add(fs::path(model_dir) / "config.json");
  for (fs::recursive_directory_iterator it(version_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_regular_file(ec)) add(it->path());
  }
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, "|");
}

int64_t MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

}  // namespace

std::vector<int64_t> VersionPolicy::Select(const std::vector<int64_t>& on_disk) const {
  switch (kind) {
    case Kind::kAll:
      return on_disk;
    case Kind::kLatest: {
      const size_t n = std::min(on_disk.size(), static_cast<size_t>(std::max(1, num_versions)));
      return std::vector<int64_t>(on_disk.end() - static_cast<std::ptrdiff_t>(n), on_disk.end());
    }
    case Kind::kSpecific: {
      std::vector<int64_t> out;
      for (int64_t v : on_disk) {
        if (std::find(versions.begin(), versions.end(), v) != versions.end()) out.push_back(v);
      }
      return out;
    }
  }
  return {};
}

const char* ModelControlName(ModelControl control) {
  switch (control) {
    case ModelControl::kNone:
      return "none";
    case ModelControl::kPoll:
      return "poll";
    case ModelControl::kExplicit:
      return "explicit";
  }
  return "none";
}

absl::StatusOr<ModelControl> ParseModelControl(const std::string& name) {
  if (name == "none") return ModelControl::kNone;
  if (name == "poll") return ModelControl::kPoll;
  if (name == "explicit") return ModelControl::kExplicit;
  return absl::InvalidArgumentError(
      absl::StrCat("model control '", name, "' is not one of none, poll, explicit"));
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Create(
    RepositoryOptions options, RepositoryLoader loader, InferenceCore* core,
    metrics::ServerMetrics* metrics, Log log) {
  std::error_code ec;
  if (!fs::is_directory(options.root, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model repository ", options.root, " is not a directory"));
  }
  if (options.control == ModelControl::kPoll && options.poll_ms <= 0) {
    return absl::InvalidArgumentError("the repository poll interval must be positive");
  }
  if (!loader.read_policy || !loader.load || core == nullptr) {
    return absl::InvalidArgumentError("a model repository needs a loader and a core");
  }
  if (!log) log = [](const std::string&) {};
  return std::unique_ptr<ModelRepository>(
      new ModelRepository(std::move(options), std::move(loader), core, metrics, std::move(log)));
}

ModelRepository::ModelRepository(RepositoryOptions options, RepositoryLoader loader,
                                 InferenceCore* core, metrics::ServerMetrics* metrics, Log log)
    : options_(std::move(options)),
      loader_(std::move(loader)),
      core_(core),
      metrics_(metrics),
      log_(std::move(log)) {}

ModelRepository::~ModelRepository() { Stop(); }

void ModelRepository::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // Enqueue reads worker_ only while stop_ is false.
  if (worker_.joinable()) worker_.join();
}

std::vector<std::string> ModelRepository::ModelsOnDisk() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(options_.root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2) && fs::is_regular_file(it->path() / "config.json", ec2)) {
      out.push_back(it->path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status ModelRepository::LoadInitial() {
  if (options_.control != ModelControl::kExplicit) return SyncAll(/*retry_failed=*/true);
  std::vector<std::string> names = options_.startup_models;
  if (std::find(names.begin(), names.end(), "*") != names.end()) names = ModelsOnDisk();
  absl::Status first;
  for (const auto& name : names) {
    if (auto s = Sync(name, /*retry_failed=*/true); !s.ok() && first.ok()) first = s;
  }
  return first;
}

void ModelRepository::Start(std::function<void()> on_change) {
  std::lock_guard<std::mutex> lock(mu_);
  if (worker_.joinable()) return;
  on_change_ = std::move(on_change);
  worker_ = std::thread([this] { Run(); });
}

void ModelRepository::Run() {
  auto next_poll = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.poll_ms);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (!work_.empty()) {
      Work work = std::move(work_.front());
      work_.pop_front();
      lock.unlock();
      const absl::Status s = work.run();
      Changed();
      work.done(s);
      lock.lock();
      continue;
    }
    if (options_.control != ModelControl::kPoll) {
      cv_.wait(lock, [&] { return stop_ || !work_.empty(); });
      continue;
    }
    if (cv_.wait_until(lock, next_poll, [&] { return stop_ || !work_.empty(); })) continue;
    lock.unlock();
    SyncAll(/*retry_failed=*/false);  // failures are logged and counted
    Changed();
    lock.lock();
    next_poll = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.poll_ms);
  }
  // Requests not started are answered, never dropped.
  std::deque<Work> left = std::move(work_);
  lock.unlock();
  for (auto& w : left) w.done(absl::UnavailableError("the server is shutting down"));
}

void ModelRepository::Enqueue(std::function<absl::Status()> run, Done done) {
  const char* refusal = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && worker_.joinable() && work_.size() < kMaxQueuedRequests) {
      work_.push_back(Work{std::move(run), std::move(done)});
      cv_.notify_all();
      return;
    }
    refusal = stop_                 ? "the server is shutting down"
              : !worker_.joinable() ? "the server is still starting"
                                    : "too many model load and unload requests are waiting; "
                                      "retry later";
  }
  done(absl::UnavailableError(refusal));
}

void ModelRepository::Load(const std::string& name, Done done) {
  if (options_.control != ModelControl::kExplicit) {
    return done(absl::FailedPreconditionError(
        absl::StrCat("model control is '", ModelControlName(options_.control),
                     "'; loading and unloading need --model-control-mode=explicit")));
  }
  Enqueue([this, name] { return Sync(name, /*retry_failed=*/true); }, std::move(done));
}

void ModelRepository::Unload(const std::string& name, Done done) {
  if (options_.control != ModelControl::kExplicit) {
    return done(absl::FailedPreconditionError(
        absl::StrCat("model control is '", ModelControlName(options_.control),
                     "'; loading and unloading need --model-control-mode=explicit")));
  }
  Enqueue(
      [this, name]() -> absl::Status {
        const std::vector<int64_t> served = ServedVersions(name);
        if (served.empty()) {
          return absl::NotFoundError(
              absl::StrCat("model '", name.substr(0, 128), "' is not loaded from the repository"));
        }
        absl::Status s = UnloadVersions(name, served);
        std::lock_guard<std::mutex> lock(mu_);
        models_.erase(name);  // listed as unloaded by Index
        return s;
      },
      std::move(done));
}

void ModelRepository::Poll(Done done) {
  Enqueue([this] { return SyncAll(/*retry_failed=*/false); }, std::move(done));
}

void ModelRepository::Changed() {
  if (on_change_) on_change_();
}

absl::Status ModelRepository::SyncAll(bool retry_failed) {
  const std::vector<std::string> on_disk = ModelsOnDisk();
  std::set<std::string> names(on_disk.begin(), on_disk.end());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, versions] : models_) names.insert(name);  // gone from disk
  }
  absl::Status first;
  for (const auto& name : names) {
    if (auto s = Sync(name, retry_failed); !s.ok() && first.ok()) first = s;
  }
  return first;
}

std::vector<int64_t> ModelRepository::ServedVersions(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> served;
  auto it = models_.find(name);
  if (it != models_.end()) {
    for (const auto& [v, e] : it->second) {
      if (e.served) served.push_back(v);
    }
  }
  return served;
}

void ModelRepository::SetState(const std::string& name, int64_t version, std::string state,
                               std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  VersionEntry& e = models_[name][version];
  e.state = std::move(state);
  e.reason = std::move(reason);
}

absl::Status ModelRepository::Sync(const std::string& name, bool retry_failed) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name.substr(0, 128), "' is not a model name"));
  }
  const std::string model_dir = (fs::path(options_.root) / name).string();
  const std::vector<int64_t> served = ServedVersions(name);
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(model_dir) / "config.json", ec)) {
    // Gone from the repository: unload what it served.
    absl::Status s = UnloadVersions(name, served);
    {
      std::lock_guard<std::mutex> lock(mu_);
      models_.erase(name);
    }
    if (!s.ok()) return s;
    return absl::NotFoundError(
        absl::StrCat("model '", name.substr(0, 128), "' has no config.json in the repository"));
  }
  auto fail = [&](int64_t version, const absl::Status& s) {
    log_(absl::StrCat(
        "model ", name, version > 0 ? absl::StrCat(" version ", version) : "",
        ": load failed: ", s.message(),
        served.empty() ? ""
                       : absl::StrCat("; still serving version(s) ", absl::StrJoin(served, ", "))));
    if (metrics_ != nullptr) metrics_->CountModelLoad(name, false);
  };
  auto policy = loader_.read_policy(name, model_dir);
  if (!policy.ok()) {
    SetState(name, 0, "UNAVAILABLE", std::string(policy.status().message()));
    fail(0, policy.status());
    return policy.status();
  }
  const std::vector<int64_t> wanted = policy->Select(VersionsOnDisk(model_dir));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(name);
    if (it != models_.end()) it->second.erase(0);
  }
  if (wanted.empty()) {
    const auto s = absl::NotFoundError(
        absl::StrCat("no version directory of model ", name, " matches its version policy"));
    SetState(name, 0, "UNAVAILABLE", std::string(s.message()));
    fail(0, s);
    return s;
  }
  absl::Status first;
  for (int64_t v : wanted) {
    const std::string version_dir = (fs::path(model_dir) / absl::StrCat(v)).string();
    const std::string fingerprint = Fingerprint(model_dir, version_dir);
    VersionEntry before;
    {
      std::lock_guard<std::mutex> lock(mu_);
      before = models_[name][v];
    }
    // Unchanged since it loaded, or since it failed to (retried only on
    // request): nothing to do.
    if (before.served && before.fingerprint == fingerprint) continue;
    if (!retry_failed && before.failed_fingerprint == fingerprint) continue;
    if (!before.served) SetState(name, v, "LOADING", "");
    const auto start = std::chrono::steady_clock::now();
    absl::Status s;
    auto loaded = loader_.load(name, v, model_dir, version_dir);
    if (!loaded.ok()) {
      s = loaded.status();
    } else {
      loaded->spec.name = name;
      loaded->spec.version = v;
      if (metrics_ != nullptr) metrics_->AddModel(name);
      s = before.served ? core_->ReplaceServable(std::move(loaded->spec), std::move(loaded->model))
                        : core_->AddServable(std::move(loaded->spec), std::move(loaded->model));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      VersionEntry& e = models_[name][v];
      if (s.ok()) {
        e = VersionEntry{"READY", "", true, fingerprint, ""};
      } else {
        e.failed_fingerprint = fingerprint;
        if (!e.served) {
          e.state = "UNAVAILABLE";
          e.reason = std::string(s.message());
        }
      }
    }
    if (s.ok()) {
      if (metrics_ != nullptr) metrics_->CountModelLoad(name, true);
      log_(absl::StrCat("model ", name, " version ", v, ": ", before.served ? "reloaded" : "loaded",
                        core_->ready() ? " and warmed" : "", " in ", MillisSince(start),
                        " ms from ", version_dir));
    } else {
      fail(v, s);
      if (first.ok()) first = s;
    }
  }
  // Unload what is no longer wanted, once a wanted version serves.
  std::vector<int64_t> unwanted;
  bool any_wanted_served = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [v, e] : models_[name]) {
      const bool is_wanted = std::find(wanted.begin(), wanted.end(), v) != wanted.end();
      if (e.served && is_wanted) any_wanted_served = true;
      if (e.served && !is_wanted) unwanted.push_back(v);
    }
  }
  if (!unwanted.empty()) {
    if (!any_wanted_served) {
      log_(absl::StrCat("model ", name, ": keeping version(s) ", absl::StrJoin(unwanted, ", "),
                        " until a version the policy wants loads"));
    } else if (auto s = UnloadVersions(name, unwanted); !s.ok() && first.ok()) {
      first = s;
    }
  }
  {
    // Versions that failed and are no longer wanted leave the index.
    std::lock_guard<std::mutex> lock(mu_);
    auto& versions = models_[name];
    for (auto it = versions.begin(); it != versions.end();) {
      const bool is_wanted = std::find(wanted.begin(), wanted.end(), it->first) != wanted.end();
      it = (!it->second.served && !is_wanted) ? versions.erase(it) : std::next(it);
    }
  }
  return first;
}

absl::Status ModelRepository::UnloadVersions(const std::string& name,
                                             const std::vector<int64_t>& versions) {
  absl::Status first;
  for (int64_t v : versions) {
    SetState(name, v, "UNLOADING", "");
    const auto start = std::chrono::steady_clock::now();
    // Waits for the version's accepted requests; destroys it here.
    absl::Status s = core_->RemoveServable(name, v);
    {
      std::lock_guard<std::mutex> lock(mu_);
      models_[name].erase(v);
    }
    if (!s.ok()) {
      if (first.ok()) first = s;
      continue;
    }
    // Hands the freed weights and buffers back to the system.
    malloc_trim(0);
    if (metrics_ != nullptr) metrics_->CountModelUnload(name);
    log_(absl::StrCat("model ", name, " version ", v, ": unloaded in ", MillisSince(start),
                      " ms (drained)"));
  }
  return first;
}

std::vector<ModelVersionState> ModelRepository::Index() const {
  std::vector<ModelVersionState> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, versions] : models_) {
    for (const auto& [v, e] : versions) out.push_back({name, v, e.state, e.reason});
  }
  // Models in the directory that were never loaded (explicit mode).
  for (const auto& name : ModelsOnDisk()) {
    auto it = models_.find(name);
    if (it == models_.end() || it->second.empty()) {
      out.push_back({name, 0, "UNAVAILABLE", "unloaded"});
    }
  }
  return out;
}

}  // namespace ghostserve::core
