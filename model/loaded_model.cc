#include "model/loaded_model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/calibration.h"
#include "model/state_dict.h"

namespace ghostserve::model {

std::vector<std::string> BuiltinModelNames() {
  return {"ghostnet_050", "ghostnet_100", "ghostnet_130"};
}

absl::StatusOr<GhostNetOptions> BuiltinModelOptions(const std::string& name) {
  GhostNetOptions o;
  if (name == "ghostnet_050") {
    o.width = 0.5;
  } else if (name == "ghostnet_100") {
    o.width = 1.0;
  } else if (name == "ghostnet_130") {
    o.width = 1.3;
  } else {
    return absl::NotFoundError(absl::StrCat("unknown model '", name, "'; built-in models are ",
                                            absl::StrJoin(BuiltinModelNames(), ", ")));
  }
  return o;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const LoadModelOptions& options) {
  if (auto s = options.net.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", options.name, ": ", s.message()));
  }
  auto loaded = std::make_unique<LoadedModel>();
  loaded->name = options.name;
  loaded->options = options.net;
  try {
    GhostNet net(options.net);
    if (options.weights_path.empty() && options.weights_bytes.empty()) {
      InitializeDeterministic(net, options.seed);
      loaded->weights_source = absl::StrCat("untrained:seed=", options.seed);
    } else {
      const bool from_file = !options.weights_path.empty();
      const std::string what = from_file ? options.weights_path : options.weights_name;
      auto state = from_file ? ReadWeightsFile(options.weights_path)
                             : ParseSafetensorsBytes(options.weights_bytes, what);
      if (!state.ok()) return state.status();
      if (auto s = LoadStateDict(*net, *state); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model ", options.name, ": weights ", what,
                         " do not fit the architecture: ", s.message()));
      }
      loaded->weights_source = absl::StrCat(from_file ? "file:" : "builtin:", what);
      loaded->trained = true;
    }
    net->eval();
    loaded->parameters = net->CountParameters();
    loaded->macs = net->CountMacs();
    InferenceOptions inference = options.inference;
    if (inference.precision == Precision::kInt8 && inference.calibration == nullptr) {
      if (options.calibration_path.empty() && options.calibration_bytes.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model ", options.name,
            ": precision int8 needs a calibration (\"calibration\" in the model config; make one "
            "with ghostserve-train calibrate)"));
      }
      auto cal = options.calibration_path.empty()
                     ? ParseCalibration(options.calibration_bytes, options.name + " (built in)")
                     : ReadCalibrationFile(options.calibration_path);
      if (!cal.ok()) {
        return absl::Status(cal.status().code(),
                            absl::StrCat("model ", options.name, ": ", cal.status().message()));
      }
      inference.calibration = std::make_shared<const Calibration>(std::move(*cal));
    }
    auto compiled = InferenceGhostNet::Create(*net, inference);
    if (!compiled.ok()) return compiled.status();
    loaded->inference = std::move(*compiled);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model ", options.name, ": ", e.what()));
  }
  return loaded;
}

}  // namespace ghostserve::model
