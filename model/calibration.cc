#include "model/calibration.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace ghostserve::model {
namespace {
constexpr char kFormat[] = "ghostserve-int8-calibration";
}  // namespace

std::string CalibrationToJson(const Calibration& c) {
  // One range per line, so the file reads (and diffs) as a table.
  std::string out = "{\n";
  out += absl::StrCat(" \"format\": \"", kFormat, "\",\n \"version\": 1,\n");
  out += absl::StrCat(" \"fingerprint\": ", nlohmann::json(c.fingerprint).dump(), ",\n");
  out += absl::StrCat(" \"images\": ", c.images, ",\n");
  out += absl::StrCat(" \"data\": ", nlohmann::json(c.data).dump(), ",\n");
  out += " \"ranges\": {";
  const char* sep = "\n";
  for (const auto& [name, r] : c.ranges) {
    out += absl::StrCat(sep, "  ", nlohmann::json(name).dump(), ": [",
                        nlohmann::json(r.first).dump(), ", ", nlohmann::json(r.second).dump(), "]");
    sep = ",\n";
  }
  out += "\n }\n}\n";
  return out;
}

absl::StatusOr<Calibration> ParseCalibration(std::string_view json, const std::string& source) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("calibration ", source, ": ", why));
  };
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (!j.contains("format") || j["format"] != kFormat) {
    return bad(absl::StrCat("\"format\" must be \"", kFormat, "\""));
  }
  if (!j.contains("version") || j["version"] != 1) return bad("\"version\" must be 1");
  Calibration c;
  if (!j.contains("fingerprint") || !j["fingerprint"].is_string()) {
    return bad("\"fingerprint\" must be a string");
  }
  c.fingerprint = j["fingerprint"].get<std::string>();
  if (j.contains("images")) {
    if (!j["images"].is_number_integer()) return bad("\"images\" must be an integer");
    c.images = j["images"].get<int64_t>();
  }
  if (j.contains("data")) {
    if (!j["data"].is_string()) return bad("\"data\" must be a string");
    c.data = j["data"].get<std::string>();
  }
  if (!j.contains("ranges") || !j["ranges"].is_object() || j["ranges"].empty()) {
    return bad("\"ranges\" must be a non-empty object");
  }
  for (const auto& [name, r] : j["ranges"].items()) {
    if (!r.is_array() || r.size() != 2 || !r[0].is_number() || !r[1].is_number()) {
      return bad(absl::StrCat("range \"", name, "\" must be [min, max]"));
    }
    const float lo = r[0].get<float>(), hi = r[1].get<float>();
    if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi) {
      return bad(absl::StrCat("range \"", name, "\" must be finite with min <= max"));
    }
    c.ranges.emplace(name, std::make_pair(lo, hi));
  }
  return c;
}

absl::StatusOr<Calibration> ReadCalibrationFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("calibration file ", path, " not found"));
  std::ostringstream s;
  s << in.rdbuf();
  return ParseCalibration(s.str(), path);
}

}  // namespace ghostserve::model
