#include "server/core/servable_registry.h"

#include <mutex>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ghostserve::core {

absl::StatusOr<int64_t> ParseVersion(const std::string& version) {
  if (version.empty()) return 0;
  int64_t v = 0;
  const bool digits = version.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || version.size() > 18 || !absl::SimpleAtoi(version, &v) || v <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version '", version.substr(0, 32), "' is not a positive integer"));
  }
  return v;
}

absl::Status ServableRegistry::Add(std::shared_ptr<Servable> servable) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  Versions_& versions = servables_[servable->name()];
  if (versions.count(servable->version()) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("model ", servable->name(), " version ",
                                                 servable->version(), " is already served"));
  }
  versions.emplace(servable->version(), std::move(servable));
  return absl::OkStatus();
}

absl::StatusOr<Servable*> ServableRegistry::Lookup(const std::string& name,
                                                   const std::string& version) const {
  auto it = servables_.find(name);
  if (it == servables_.end() || it->second.empty()) {
    std::vector<std::string> names;
    for (const auto& [n, v] : servables_) {
      if (!v.empty()) names.push_back(n);
    }
    return absl::NotFoundError(absl::StrCat("unknown model '", name.substr(0, 128),
                                            "'; served models: ", absl::StrJoin(names, ", ")));
  }
  const Versions_& versions = it->second;
  auto v = ParseVersion(version);
  auto found = !v.ok() ? versions.end() : *v == 0 ? std::prev(versions.end()) : versions.find(*v);
  if (found == versions.end()) {
    std::vector<int64_t> served;
    for (const auto& [n, s] : versions) served.push_back(n);
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '",
                                            version.substr(0, 32),
                                            "' (versions: ", absl::StrJoin(served, ", "), ")"));
  }
  return found->second.get();
}

absl::StatusOr<ServableUse> ServableRegistry::Acquire(const std::string& name,
                                                      const std::string& version) const {
  // The use is taken under the lock, so a Remove that follows sees it.
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto s = Lookup(name, version);
  if (!s.ok()) return s.status();
  return ServableUse(*s);
}

absl::StatusOr<std::shared_ptr<const Servable>> ServableRegistry::Find(
    const std::string& name, const std::string& version) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto s = Lookup(name, version);
  if (!s.ok()) return s.status();
  return std::shared_ptr<const Servable>(servables_.at(name).at((*s)->version()));
}

std::vector<std::shared_ptr<const Servable>> ServableRegistry::List() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::shared_ptr<const Servable>> out;
  for (const auto& [n, versions] : servables_) {
    for (const auto& [v, s] : versions) out.push_back(s);
  }
  return out;
}

std::vector<int64_t> ServableRegistry::Versions(const std::string& name) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<int64_t> out;
  auto it = servables_.find(name);
  if (it != servables_.end()) {
    for (const auto& [v, s] : it->second) out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::shared_ptr<Servable>> ServableRegistry::Replace(
    std::shared_ptr<Servable> servable) {
  std::shared_ptr<Servable> old;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto s = Lookup(servable->name(), absl::StrCat(servable->version()));
    if (!s.ok()) return s.status();
    old = std::exchange(servables_[servable->name()][servable->version()], std::move(servable));
  }
  old->WaitUnused();
  return old;
}

absl::StatusOr<std::shared_ptr<Servable>> ServableRegistry::Remove(const std::string& name,
                                                                   int64_t version) {
  std::shared_ptr<Servable> old;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto s = Lookup(name, absl::StrCat(version));
    if (!s.ok()) return s.status();
    auto it = servables_.find(name);
    auto vit = it->second.find(version);
    old = std::move(vit->second);
    it->second.erase(vit);
    if (it->second.empty()) servables_.erase(it);
  }
  old->WaitUnused();
  return old;
}

}  // namespace ghostserve::core
