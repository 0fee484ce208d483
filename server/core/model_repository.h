// A model repository (--model-repository DIR) laid out as Triton's:
//
//   DIR/<model>/config.json     the model config (config/model_config.h),
//                               plus an optional "version_policy"
//   DIR/<model>/<version>/      one version's weights; <version> is a
//                               positive integer
//
// The repository keeps the core's servables in step with the directory:
// every change goes through one worker thread, in order. A version is
// loaded and warmed before it takes traffic (InferenceCore::AddServable);
// a version whose files changed is reloaded and swapped in place
// (ReplaceServable); a version no longer wanted is unloaded once a wanted
// one serves, after its accepted requests finish (RemoveServable). A version
// that fails to load is not served, is logged and counted, and whatever
// served before keeps serving.
//
// Model control, as Triton's --model-control-mode:
//   none      every model is loaded at start; the directory is not watched.
//   poll      as none, then the directory is re-read every poll interval.
//   explicit  the start-up models are loaded; then only Load and Unload
//             (KServe/Triton RepositoryModelLoad/Unload) change anything.
//
// The core knows nothing of model formats: a RepositoryLoader reads a
// model's policy and loads one version (torch_model.h gives the GhostNet
// one, tests a fake).
#ifndef GHOSTSERVE_SERVER_CORE_MODEL_REPOSITORY_H_
#define GHOSTSERVE_SERVER_CORE_MODEL_REPOSITORY_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/model.h"
#include "server/core/servable.h"

namespace ghostserve::metrics {
class ServerMetrics;
}

namespace ghostserve::core {

class InferenceCore;

// Which of the versions on disk to serve (Triton's ModelVersionPolicy).
struct VersionPolicy {
  enum class Kind { kLatest, kAll, kSpecific };
  Kind kind = Kind::kLatest;
  int num_versions = 1;           // kLatest
  std::vector<int64_t> versions;  // kSpecific
  // Of `on_disk` (ascending), the versions to serve, ascending.
  std::vector<int64_t> Select(const std::vector<int64_t>& on_disk) const;
};

struct LoadedVersion {
  // Name and version are set by the repository.
  ServableSpec spec;
  std::unique_ptr<Model> model;
};

struct RepositoryLoader {
  // Reads `model_dir`/config.json (cheap): the version policy, or
  // InvalidArgument/NotFound naming what is wrong.
  std::function<absl::StatusOr<VersionPolicy>(const std::string& model,
                                              const std::string& model_dir)>
      read_policy;
  // Loads one version from `version_dir` with `model_dir`/config.json.
  std::function<absl::StatusOr<LoadedVersion>(const std::string& model, int64_t version,
                                              const std::string& model_dir,
                                              const std::string& version_dir)>
      load;
};

enum class ModelControl { kNone, kPoll, kExplicit };
// "none", "poll", "explicit".
const char* ModelControlName(ModelControl control);
absl::StatusOr<ModelControl> ParseModelControl(const std::string& name);

struct RepositoryOptions {
  std::string root;
  ModelControl control = ModelControl::kNone;
  int64_t poll_ms = 15000;
  // kExplicit: the models loaded at start ("*" = all); ignored otherwise.
  std::vector<std::string> startup_models;
};

// One model version as the repository sees it, for RepositoryIndex.
struct ModelVersionState {
  std::string name;
  int64_t version = 0;  // 0: the model as a whole (e.g. its config is broken)
  std::string state;    // READY, LOADING, UNAVAILABLE, UNLOADING
  std::string reason;   // why not READY
};

// Thread-safe.
class ModelRepository {
 public:
  using Log = std::function<void(const std::string&)>;
  using Done = std::function<void(absl::Status)>;

  // `core` and `metrics` (may be null) are borrowed and must outlive the
  // repository. Loads nothing yet.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Create(RepositoryOptions options,
                                                                 RepositoryLoader loader,
                                                                 InferenceCore* core,
                                                                 metrics::ServerMetrics* metrics,
                                                                 Log log);
  // Stop()s; servables stay in the core.
  ~ModelRepository();
  // Stops the worker after the change it is making; requests still waiting
  // and any made later get Unavailable. For a drain: call before the
  // transports stop, so no load request holds them up. Call from one thread.
  void Stop();

  // Start-up, on the caller's thread: loads every model (none, poll) or the
  // start-up models (explicit). Any failure is returned: a server should not
  // start with a broken model.
  absl::Status LoadInitial();
  // Starts the worker, and with kPoll the polling. `on_change` (may be
  // null) runs on the worker after each load, unload or poll (e.g. to update
  // per-model health).
  void Start(std::function<void()> on_change = nullptr);

  // Load, Unload and Poll requests waiting for the worker at most; more are
  // refused with Unavailable (a client cannot queue unbounded work).
  static constexpr size_t kMaxQueuedRequests = 64;

  // Explicit mode (FailedPrecondition otherwise): reads `name` from the
  // directory and loads the versions its policy wants that are not served
  // or whose files changed, retrying failed ones; then unloads the versions
  // no longer wanted. `done` runs on the worker once finished: OK, or the
  // first failure (the old versions keep serving).
  void Load(const std::string& name, Done done);
  // Explicit mode: unloads every version of `name` (new requests get
  // NotFound; accepted ones finish first). NotFound if it is not loaded.
  void Unload(const std::string& name, Done done);
  // Re-reads the whole directory now, on the worker (what polling does);
  // `done` gets the first failure.
  void Poll(Done done);

  std::vector<ModelVersionState> Index() const;
  ModelControl control() const { return options_.control; }
  const std::string& root() const { return options_.root; }

 private:
  struct VersionEntry {
    std::string state;  // READY, LOADING, UNAVAILABLE, UNLOADING
    std::string reason;
    bool served = false;
    std::string fingerprint;         // of the files the served version came from
    std::string failed_fingerprint;  // of the files that failed to load
  };

  ModelRepository(RepositoryOptions options, RepositoryLoader loader, InferenceCore* core,
                  metrics::ServerMetrics* metrics, Log log);
  struct Work {
    std::function<absl::Status()> run;
    Done done;
  };
  void Run();
  // Runs `run` on the worker, then `done` with its status; `done` gets
  // Unavailable if the worker is not running, stops first, or has
  // kMaxQueuedRequests waiting.
  void Enqueue(std::function<absl::Status()> run, Done done);
  // Model directories of the repository (names with a config.json).
  std::vector<std::string> ModelsOnDisk() const;
  // Brings `name` in step with its directory. `retry_failed`: load versions
  // whose files failed before and have not changed.
  absl::Status Sync(const std::string& name, bool retry_failed);
  absl::Status SyncAll(bool retry_failed);
  absl::Status UnloadVersions(const std::string& name, const std::vector<int64_t>& versions);
  // The versions of `name` the repository serves, ascending.
  std::vector<int64_t> ServedVersions(const std::string& name) const;
  void SetState(const std::string& name, int64_t version, std::string state, std::string reason);
  void Changed();

  const RepositoryOptions options_;
  const RepositoryLoader loader_;
  InferenceCore* const core_;
  metrics::ServerMetrics* const metrics_;
  const Log log_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Work> work_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::map<int64_t, VersionEntry>> models_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_change_;  // set by Start, before the worker runs
  std::thread worker_;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_MODEL_REPOSITORY_H_
