#include "server/config/repository_loader.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/loaded_model.h"
#include "model/threading.h"
#include "server/config/config.h"
#include "server/core/torch_model.h"

namespace ghostserve::config {
namespace {

namespace fs = std::filesystem;
constexpr std::uintmax_t kMaxConfigBytes = 4 << 20;

core::VersionPolicy ToPolicy(const VersionPolicyConfig& c) {
  core::VersionPolicy p;
  p.kind = c.kind == "all"        ? core::VersionPolicy::Kind::kAll
           : c.kind == "specific" ? core::VersionPolicy::Kind::kSpecific
                                  : core::VersionPolicy::Kind::kLatest;
  p.num_versions = c.num_versions;
  p.versions = c.versions;
  return p;
}

// The weights file of a version directory when the config names none.
absl::StatusOr<std::string> FindWeights(const std::string& version_dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (fs::directory_iterator it(version_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto ext = it->path().extension();
    if (it->is_regular_file(ec) && (ext == ".safetensors" || ext == ".pth")) {
      found.push_back(it->path().filename().string());
    }
  }
  if (found.size() == 1) return (fs::path(version_dir) / found[0]).string();
  if (found.empty()) {
    return absl::NotFoundError(
        absl::StrCat(version_dir, " holds no *.safetensors or *.pth weights file"));
  }
  return absl::InvalidArgumentError(absl::StrCat(version_dir, " holds several weights files (",
                                                 absl::StrJoin(found, ", "),
                                                 "); name one with \"weights\" in config.json"));
}

}  // namespace

absl::StatusOr<ModelConfig> ReadRepositoryConfig(const std::string& model,
                                                 const std::string& model_dir,
                                                 const std::string& base_dir) {
  const std::string path = (fs::path(model_dir) / "config.json").string();
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  if (size > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is over ", kMaxConfigBytes, " bytes"));
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  // As Triton: the name may be left out, and is the directory's.
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && !j.contains("name")) j["name"] = model;
  auto config = ParseModelConfig(j.is_object() ? j.dump() : text.str(), base_dir, path);
  if (!config.ok()) return config.status();
  if (config->name != model) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"name\" is '", config->name,
                                                   "' but the directory is '", model, "'"));
  }
  return config;
}

core::RepositoryLoader GhostNetRepositoryLoader() {
  core::RepositoryLoader loader;
  loader.read_policy = [](const std::string& model,
                          const std::string& model_dir) -> absl::StatusOr<core::VersionPolicy> {
    auto config = ReadRepositoryConfig(model, model_dir, model_dir);
    if (!config.ok()) return config.status();
    return ToPolicy(config->version_policy);
  };
  loader.load = [](const std::string& model, int64_t version, const std::string& model_dir,
                   const std::string& version_dir) -> absl::StatusOr<core::LoadedVersion> {
    // Loading runs on the repository's thread, beside serving: one thread.
    model::ConfigureInferenceThread(1);
    auto config = ReadRepositoryConfig(model, model_dir, version_dir);
    if (!config.ok()) return config.status();
    if (auto s = config->preprocess.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model ", model, ": ", s.message()));
    }
    model::LoadModelOptions options = LoadOptions(*config);
    options.name = model;
    if (options.weights_path.empty()) {
      auto weights = FindWeights(version_dir);
      if (!weights.ok()) return weights.status();
      options.weights_path = *weights;
    }
    auto loaded = model::LoadModel(options);
    if (!loaded.ok()) return loaded.status();
    core::LoadedVersion out;
    out.spec.name = model;
    out.spec.version = version;
    out.spec.preprocess = config->preprocess;
    out.spec.labels = config->imagenet_labels ? ImageNetLabels() : config->labels;
    out.model = std::make_unique<core::TorchModel>(std::move(*loaded));
    return out;
  };
  return loader;
}

}  // namespace ghostserve::config
