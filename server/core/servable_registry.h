// The served models by name. Servables can be added, replaced and removed
// while requests run: a request holds a ServableUse from lookup to answer,
// and removal waits for those to end.
#ifndef GHOSTSERVE_SERVER_CORE_SERVABLE_REGISTRY_H_
#define GHOSTSERVE_SERVER_CORE_SERVABLE_REGISTRY_H_

#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "server/core/servable.h"

namespace ghostserve::core {

// Thread-safe.
class ServableRegistry {
 public:
  // AlreadyExists if the name is taken.
  absl::Status Add(std::shared_ptr<Servable> servable);

  // Starts a request on `name`. NotFound naming the served models.
  absl::StatusOr<ServableUse> Acquire(const std::string& name) const;
  // For descriptions (metadata, ListModels); the pointer keeps the servable
  // alive, not registered.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(const std::string& name) const;
  std::vector<std::shared_ptr<const Servable>> List() const;

  // Puts `servable` in place of the one of the same name (NotFound if there
  // is none): new requests go to it at once. Waits until no request uses the
  // old one and returns it. The caller destroys it, on a thread that is not
  // one of its batch threads.
  absl::StatusOr<std::shared_ptr<Servable>> Replace(std::shared_ptr<Servable> servable);
  // Unregisters `name` (new requests get NotFound), waits until no request
  // uses it and returns it; the caller destroys it as for Replace.
  absl::StatusOr<std::shared_ptr<Servable>> Remove(const std::string& name);

 private:
  absl::Status NotFound(const std::string& name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable std::shared_mutex mu_;
  std::map<std::string, std::shared_ptr<Servable>> servables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_SERVABLE_REGISTRY_H_
