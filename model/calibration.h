// Activation ranges for static int8 quantization, measured once on sample
// images and stored beside the model config.
//
// The int8 engine quantizes every activation map with one scale per map:
// each step of the planned forward (planned_ghostnet.h) has a name, and the
// calibration holds the smallest and largest value that step wrote over the
// calibration images, as the fp32 engine computed them. Weights need no
// calibration (one scale per output channel, from the weights themselves).
//
// A calibration belongs to one set of weights: it carries the fingerprint of
// the folded weights it was measured with, and a model refuses one made for
// other weights.
#ifndef GHOSTSERVE_MODEL_CALIBRATION_H_
#define GHOSTSERVE_MODEL_CALIBRATION_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace ghostserve::model {

struct Calibration {
  // Step name -> (min, max) of the values it wrote.
  std::map<std::string, std::pair<float, float>> ranges;
  // InferenceGhostNet::WeightsFingerprint() of the weights measured.
  std::string fingerprint;
  int64_t images = 0;  // how many images were run
  std::string data;    // where they came from (free text, for provenance)
};

// JSON: {"format": "ghostserve-int8-calibration", "version": 1,
// "fingerprint": ..., "images": N, "data": ..., "ranges": {name: [min, max]}}.
std::string CalibrationToJson(const Calibration& c);
// InvalidArgument naming `source` for malformed input.
absl::StatusOr<Calibration> ParseCalibration(std::string_view json, const std::string& source);
// NotFound for a missing file, else as ParseCalibration.
absl::StatusOr<Calibration> ReadCalibrationFile(const std::string& path);

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_CALIBRATION_H_
