#include "server/core/servable_registry.h"

#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ghostserve::core {

absl::Status ServableRegistry::Add(std::shared_ptr<Servable> servable) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  const std::string& name = servable->name();
  if (servables_.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("model ", name, " is configured twice"));
  }
  servables_.emplace(name, std::move(servable));
  return absl::OkStatus();
}

absl::Status ServableRegistry::NotFound(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& [n, s] : servables_) names.push_back(n);
  return absl::NotFoundError(absl::StrCat("unknown model '", name.substr(0, 128),
                                          "'; served models: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<ServableUse> ServableRegistry::Acquire(const std::string& name) const {
  // The use is taken under the lock, so a Remove that follows sees it.
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = servables_.find(name);
  if (it == servables_.end()) return NotFound(name);
  return ServableUse(it->second.get());
}

absl::StatusOr<std::shared_ptr<const Servable>> ServableRegistry::Find(
    const std::string& name) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = servables_.find(name);
  if (it == servables_.end()) return NotFound(name);
  return std::shared_ptr<const Servable>(it->second);
}

std::vector<std::shared_ptr<const Servable>> ServableRegistry::List() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::shared_ptr<const Servable>> out;
  for (const auto& [n, s] : servables_) out.push_back(s);
  return out;
}

absl::StatusOr<std::shared_ptr<Servable>> ServableRegistry::Replace(
    std::shared_ptr<Servable> servable) {
  std::shared_ptr<Servable> old;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto it = servables_.find(servable->name());
    if (it == servables_.end()) return NotFound(servable->name());
    old = std::exchange(it->second, std::move(servable));
  }
  old->WaitUnused();
  return old;
}

absl::StatusOr<std::shared_ptr<Servable>> ServableRegistry::Remove(const std::string& name) {
  std::shared_ptr<Servable> old;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto it = servables_.find(name);
    if (it == servables_.end()) return NotFound(name);
    old = std::move(it->second);
    servables_.erase(it);
  }
  old->WaitUnused();
  return old;
}

}  // namespace ghostserve::core
