#include "server/config/model_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ghostserve::config {
namespace {

using nlohmann::json;

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

absl::Status Error(const std::string& source, const std::string& key, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" ", why));
}

absl::StatusOr<std::vector<float>> FloatList(const json& j, const std::string& source,
                                             const std::string& key) {
  if (!j.is_array()) return Error(source, key, "must be a list of numbers");
  std::vector<float> out;
  for (const auto& v : j) {
    if (!v.is_number()) return Error(source, key, "must be a list of numbers");
    out.push_back(v.get<float>());
  }
  return out;
}

absl::StatusOr<int64_t> Integer(const json& j, const std::string& source, const std::string& key,
                                int64_t lo, int64_t hi) {
  if (!j.is_number_integer() || j.get<int64_t>() < lo || j.get<int64_t>() > hi) {
    return Error(source, key, absl::StrCat("must be an integer in [", lo, ", ", hi, "]"));
  }
  return j.get<int64_t>();
}

absl::Status ParsePreprocess(const json& p, const std::string& source,
                             preprocess::PreprocessConfig* out) {
  if (!p.is_object()) return Error(source, "preprocess", "must be an object");
  for (auto it = p.begin(); it != p.end(); ++it) {
    const std::string key = "preprocess." + it.key();
    if (it.key() == "resize_shorter") {
      auto v = Integer(it.value(), source, key, 0, 4096);
      if (!v.ok()) return v.status();
      out->resize_shorter = *v;
    } else if (it.key() == "crop_size") {
      auto v = Integer(it.value(), source, key, 16, 1024);
      if (!v.ok()) return v.status();
      out->crop_size = *v;
    } else if (it.key() == "interpolation") {
      const std::string v = it.value().is_string() ? it.value().get<std::string>() : "";
      if (v == "bilinear") {
        out->interpolation = preprocess::Interpolation::kBilinear;
      } else if (v == "area") {
        out->interpolation = preprocess::Interpolation::kArea;
      } else {
        return Error(source, key, "must be \"bilinear\" or \"area\"");
      }
    } else if (it.key() == "mean" || it.key() == "std") {
      auto v = FloatList(it.value(), source, key);
      if (!v.ok()) return v.status();
      (it.key() == "mean" ? out->mean : out->std) = *v;
    } else if (it.key() == "reduced_jpeg_decode") {
      if (!it.value().is_boolean()) return Error(source, key, "must be true or false");
      out->reduced_jpeg_decode = it.value().get<bool>();
    } else {
      return Error(source, key, "is not a known key");
    }
  }
  return absl::OkStatus();
}

}  // namespace

model::LoadModelOptions LoadOptions(const ModelConfig& c) {
  model::LoadModelOptions o;
  o.name = c.name;
  o.net = c.net;
  o.weights_path = c.weights_path;
  o.weights_bytes = c.weights_bytes;
  o.weights_name = c.weights_name;
  o.calibration_path = c.calibration_path;
  o.calibration_bytes = c.calibration_bytes;
  // Checked by ParseModelConfig; "auto" resolves for this CPU here.
  if (auto p = model::ParsePrecision(c.precision); p.ok()) o.inference.precision = *p;
  return o;
}

// Triton's form: {"latest": {"num_versions": N}}, {"all": {}} or
// {"specific": {"versions": [1, 3]}}.
static absl::Status ParseVersionPolicy(const json& v, const std::string& source,
                                       VersionPolicyConfig* out) {
  const char* kKey = "version_policy";
  if (!v.is_object() || v.size() != 1) {
    return Error(source, kKey,
                 "must be one of {\"latest\": {\"num_versions\": N}}, "
                 "{\"all\": {}}, {\"specific\": {\"versions\": [...]}}");
  }
  const std::string kind = v.begin().key();
  const json& body = v.begin().value();
  if (!body.is_object()) return Error(source, kKey, absl::StrCat(kind, " must be an object"));
  out->kind = kind;
  if (kind == "latest") {
    auto n = body.contains("num_versions") ? Integer(body["num_versions"], source,
                                                     "version_policy.latest.num_versions", 1, 64)
                                           : absl::StatusOr<int64_t>(1);
    if (!n.ok()) return n.status();
    out->num_versions = static_cast<int>(*n);
  } else if (kind == "all") {
  } else if (kind == "specific") {
    if (!body.contains("versions") || !body["versions"].is_array() || body["versions"].empty()) {
      return Error(source, kKey, "specific needs a non-empty list \"versions\"");
    }
    for (const auto& e : body["versions"]) {
      auto n = Integer(e, source, "version_policy.specific.versions", 1, int64_t{1} << 53);
      if (!n.ok()) return n.status();
      out->versions.push_back(*n);
    }
  } else {
    return Error(source, kKey,
                 absl::StrCat("'", kind.substr(0, 32), "' is not one of latest, all, specific"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text, const std::string& base_dir,
                                             const std::string& source) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig c;
  c.net.width = 1.0;
  c.net.num_classes = 0;
  bool have_size = false;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "name") {
      if (!v.is_string() || !ValidName(v.get<std::string>())) {
        return Error(source, key, "must be 1-128 characters of [A-Za-z0-9_.-]");
      }
      c.name = v.get<std::string>();
    } else if (key == "architecture") {
      if (v != "ghostnet") return Error(source, key, "must be \"ghostnet\"");
    } else if (key == "width") {
      if (!v.is_number()) return Error(source, key, "must be a number");
      c.net.width = v.get<double>();
    } else if (key == "num_classes") {
      auto n = Integer(v, source, key, 1, 100000);
      if (!n.ok()) return n.status();
      c.net.num_classes = *n;
    } else if (key == "input_channels") {
      auto n = Integer(v, source, key, 1, 3);
      if (!n.ok()) return n.status();
      c.net.in_channels = *n;
    } else if (key == "input_size") {
      auto n = Integer(v, source, key, 32, 1024);
      if (!n.ok()) return n.status();
      c.net.input_size = *n;
      have_size = true;
    } else if (key == "weights" || key == "calibration") {
      if (!v.is_string() || v.get<std::string>().empty()) {
        return Error(source, key, "must be a file name");
      }
      std::filesystem::path p(v.get<std::string>());
      (key == "weights" ? c.weights_path : c.calibration_path) =
          p.is_absolute() ? p.string() : (std::filesystem::path(base_dir) / p).string();
    } else if (key == "labels" && v == "imagenet") {
      c.imagenet_labels = true;
    } else if (key == "labels") {
      if (!v.is_array()) return Error(source, key, "must be a list of strings or \"imagenet\"");
      for (const auto& l : v) {
        if (!l.is_string()) return Error(source, key, "must be a list of strings");
        c.labels.push_back(l.get<std::string>());
      }
    } else if (key == "preprocess") {
      if (auto s = ParsePreprocess(v, source, &c.preprocess); !s.ok()) return s;
    } else if (key == "precision") {
      if (!v.is_string()) {
        return Error(source, key, "must be \"fp32\", \"bf16\", \"int8\" or \"auto\"");
      }
      if (auto p = model::ParsePrecision(v.get<std::string>()); !p.ok()) {
        return Error(source, key, std::string(p.status().message()));
      }
      c.precision = v.get<std::string>();
    } else if (key == "description") {
      if (!v.is_string()) return Error(source, key, "must be a string");
      c.description = v.get<std::string>();
    } else if (key == "training") {
      c.training_json = v.dump();
    } else if (key == "version_policy") {
      if (auto s = ParseVersionPolicy(v, source, &c.version_policy); !s.ok()) return s;
    } else {
      return Error(source, key, "is not a known key");
    }
  }
  if (c.name.empty()) return Error(source, "name", "is required");
  if (c.net.num_classes == 0) return Error(source, "num_classes", "is required");
  if (c.imagenet_labels && c.net.num_classes != 1000) {
    return Error(source, "labels", "\"imagenet\" needs num_classes 1000");
  }
  if (!c.labels.empty() && static_cast<int64_t>(c.labels.size()) != c.net.num_classes) {
    return Error(
        source, "labels",
        absl::StrCat("has ", c.labels.size(), " names for ", c.net.num_classes, " classes"));
  }
  c.preprocess.channels = c.net.in_channels;
  // Unset mean/std: ImageNet's per channel, or their average for grayscale.
  const json* pre = j.contains("preprocess") ? &j["preprocess"] : nullptr;
  if (pre == nullptr || !pre->is_object() || !pre->contains("mean")) {
    c.preprocess.mean = c.net.in_channels == 3 ? std::vector<float>{0.485f, 0.456f, 0.406f}
                                               : std::vector<float>(c.net.in_channels, 0.449f);
  }
  if (pre == nullptr || !pre->is_object() || !pre->contains("std")) {
    c.preprocess.std = c.net.in_channels == 3 ? std::vector<float>{0.229f, 0.224f, 0.225f}
                                              : std::vector<float>(c.net.in_channels, 0.226f);
  }
  if (!have_size) c.net.input_size = c.preprocess.crop_size;
  if (c.preprocess.crop_size != c.net.input_size) {
    return Error(source, "input_size",
                 absl::StrCat("(", c.net.input_size, ") must equal preprocess.crop_size (",
                              c.preprocess.crop_size, ")"));
  }
  if (auto s = c.net.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  }
  if (auto s = c.preprocess.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": preprocess: ", s.message()));
  }
  return c;
}

absl::StatusOr<std::vector<ModelConfig>> ReadModelConfigs(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.path().extension() == ".json") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("no *.json model configs in ", path));
    }
  } else {
    files.push_back(path);
  }
  std::vector<ModelConfig> out;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read model config ", f));
    std::stringstream ss;
    ss << in.rdbuf();
    auto c = ParseModelConfig(ss.str(), fs::path(f).parent_path().string(), f);
    if (!c.ok()) return c.status();
    out.push_back(std::move(*c));
  }
  return out;
}

std::string ModelConfigToJson(const ModelConfig& c, const std::string& weights_file,
                              const std::string& calibration_file) {
  nlohmann::ordered_json j;
  j["name"] = c.name;
  if (c.precision != "fp32") j["precision"] = c.precision;
  if (!c.description.empty()) j["description"] = c.description;
  j["architecture"] = "ghostnet";
  j["width"] = c.net.width;
  j["num_classes"] = c.net.num_classes;
  j["input_channels"] = c.net.in_channels;
  j["input_size"] = c.net.input_size;
  if (!weights_file.empty()) j["weights"] = weights_file;
  if (!calibration_file.empty()) j["calibration"] = calibration_file;
  j["labels"] = c.labels;
  nlohmann::ordered_json p;
  p["resize_shorter"] = c.preprocess.resize_shorter;
  p["crop_size"] = c.preprocess.crop_size;
  p["interpolation"] =
      c.preprocess.interpolation == preprocess::Interpolation::kArea ? "area" : "bilinear";
  p["mean"] = c.preprocess.mean;
  p["std"] = c.preprocess.std;
  j["preprocess"] = p;
  if (!c.training_json.empty()) {
    j["training"] = nlohmann::ordered_json::parse(c.training_json, nullptr, false);
  }
  return j.dump(2) + "\n";
}

}  // namespace ghostserve::config
