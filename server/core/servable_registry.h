// The served models by name and version. Servables can be added, replaced
// and removed while requests run: a request holds a ServableUse from lookup
// to answer, and removal waits for those to end.
//
// Versions are positive integers (a model repository's version directories;
// 1 for models configured by flag). A request names a version, or none for
// the latest: the highest version registered.
#ifndef GHOSTSERVE_SERVER_CORE_SERVABLE_REGISTRY_H_
#define GHOSTSERVE_SERVER_CORE_SERVABLE_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "server/core/servable.h"

namespace ghostserve::core {

// "" -> 0 (the latest); a decimal positive integer -> itself; anything else
// InvalidArgument.
absl::StatusOr<int64_t> ParseVersion(const std::string& version);

// Thread-safe.
class ServableRegistry {
 public:
  // AlreadyExists if the name and version are taken.
  absl::Status Add(std::shared_ptr<Servable> servable);

  // Starts a request on `name` at `version` ("" = the latest). NotFound
  // naming the served models, or the model's versions.
  absl::StatusOr<ServableUse> Acquire(const std::string& name,
                                      const std::string& version = "") const;
  // For descriptions (metadata, ListModels); the pointer keeps the servable
  // alive, not registered.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(const std::string& name,
                                                       const std::string& version = "") const;
  // Every servable, by name then version.
  std::vector<std::shared_ptr<const Servable>> List() const;
  // The versions of `name` served, ascending (empty if none).
  std::vector<int64_t> Versions(const std::string& name) const;

  // Puts `servable` in place of the one of the same name and version
  // (NotFound if there is none): new requests go to it at once. Waits until
  // no request uses the old one and returns it. The caller destroys it, on a
  // thread that is not one of its batch threads.
  absl::StatusOr<std::shared_ptr<Servable>> Replace(std::shared_ptr<Servable> servable);
  // Unregisters `name` at `version` (new requests get NotFound, or the
  // next-latest version if one remains), waits until no request uses it and
  // returns it; the caller destroys it as for Replace.
  absl::StatusOr<std::shared_ptr<Servable>> Remove(const std::string& name, int64_t version);

 private:
  using Versions_ = std::map<int64_t, std::shared_ptr<Servable>>;
  // The servable `name` at `version` ("" = latest), or NotFound.
  absl::StatusOr<Servable*> Lookup(const std::string& name, const std::string& version) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable std::shared_mutex mu_;
  std::map<std::string, Versions_> servables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_SERVABLE_REGISTRY_H_
