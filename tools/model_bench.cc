// ghostserve-model-bench: runs a GhostNet in process at several batch sizes
// and prints throughput and latency, as one JSON line with --json.
//
//   ghostserve-model-bench --model ghostnet_100 --batch-sizes 1,8,32
//                          --seconds 3 --json
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "model/calibration.h"
#include "model/loaded_model.h"
#include "model/threading.h"
#include "nlohmann/json.hpp"

namespace {

using ghostserve::model::LoadModel;
using ghostserve::model::LoadModelOptions;

// Every flag's default is the member initialiser here; --help prints it.
struct BenchFlags {
  std::string model = "ghostnet_100";
  std::string weights;
  std::string calibration;  // int8: the calibration file
  std::vector<int> batch_sizes = {1, 8, 32};
  double seconds = 3.0;
  int warmup = 3;
  int threads = 0;     // 0: the CPUs available
  int input_size = 0;  // 0: the model's own (224)
  bool json = false;
  ghostserve::model::InferenceOptions inference;
};

void DeclareFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--model", f.model, "ghostnet_050 | ghostnet_100 | ghostnet_130")
      ->capture_default_str();
  app.add_option("--weights", f.weights,
                 "weights file (.pth zip or .safetensors); default: untrained");
  app.add_option("--batch-sizes", f.batch_sizes, "comma-separated batch sizes")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--seconds", f.seconds, "measured seconds per batch size")
      ->check(CLI::Validator(
          [](std::string& v) {
            double d = 0;
            if (CLI::detail::lexical_cast(v, d) && d > 0 && d <= 3600) return std::string();
            return "Value " + v + " not in (0, 3600]";
          },
          "FLOAT in (0 - 3600]"))
      ->capture_default_str();
  app.add_option("--warmup", f.warmup,
                 "unmeasured runs per batch size (the first run, which also builds the "
                 "planned engine's plan, is always made and timed as first_call_ms)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--threads", f.threads, "LibTorch intra-op threads (default: CPUs available)")
      ->check(CLI::Range(1, 256));
  app.add_option("--input-size", f.input_size, "square input side (default: the model's, 224)")
      ->check(CLI::Range(32, 1024));
  app.add_option_function<std::string>(
         "--engine",
         [&f](const std::string& v) { f.inference.planned = v == "planned"; },
         "planned (oneDNN primitives planned per input shape, the default) | aten (ATen ops "
         "per call, the previous engine)")
      ->check(CLI::IsMember({"planned", "aten"}));
  app.add_option_function<std::string>(
         "--precision",
         [&f](const std::string& v) {
           auto p = ghostserve::model::ParsePrecision(v);
           if (!p.ok()) throw CLI::ValidationError(std::string(p.status().message()));
           f.inference.precision = *p;
         },
         "fp32 (default) | bf16 | int8 (needs --calibration) | auto");
  app.add_option("--calibration", f.calibration,
                 "int8: calibration file measured on these weights (ghostserve-train "
                 "calibrate), or 'synthetic' to calibrate here on random images (for speed only)");
  app.add_flag_callback(
      "--no-tune-threads", [&f] { f.inference.tune_threads = false; },
      "planned engine: run every step on all threads (no per-step choice at batch 1-2)");
  app.add_flag_callback(
      "--nchw", [&f] { f.inference.channels_last = false; },
      "aten engine: keep activations NCHW instead of channels-last");
  app.add_flag_callback(
      "--no-force-onednn", [&f] { f.inference.force_onednn = false; },
      "aten engine: let ATen choose the convolution kernel");
  app.add_flag("--json", f.json, "print one JSON line instead of a table");
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

absl::StatusOr<ghostserve::model::Calibration> SyntheticCalibration(const std::string& model,
                                                                    const std::string& weights,
                                                                    int input_size) {
  auto net = ghostserve::model::BuiltinModelOptions(model);
  if (!net.ok()) return net.status();
  if (input_size > 0) net->input_size = input_size;
  LoadModelOptions load;
  load.name = model;
  load.net = *net;
  load.weights_path = weights;
  auto fp32 = LoadModel(load);
  if (!fp32.ok()) return fp32.status();
  torch::manual_seed(0);
  std::vector<torch::Tensor> batches;
  for (int i = 0; i < 4; ++i) {
    batches.push_back(torch::randn({8, net->in_channels, net->input_size, net->input_size}));
  }
  auto cal = (*fp32)->inference->Calibrate(batches);
  if (cal.ok()) cal->data = "synthetic: 32 random-normal images";
  return cal;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Runs a GhostNet in process at several batch sizes and prints throughput and "
      "latency (one JSON line with --json).",
      "ghostserve-model-bench"};
  BenchFlags flags;
  DeclareFlags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // help on stdout, exit 0
  } catch (const CLI::ParseError& e) {
    std::cerr << "ghostserve-model-bench: " << e.what() << "\n" << app.help();
    return 2;
  }
  const std::string& model = flags.model;
  if (flags.inference.precision == ghostserve::model::Precision::kInt8) {
    if (flags.calibration.empty()) {
      std::cerr << "ghostserve-model-bench: --precision int8 needs --calibration FILE (make one "
                   "with ghostserve-train calibrate, on the weights benchmarked)\n";
      return 2;
    }
    // "synthetic": calibrated here on random-normal images, as benchmarked.
    // The ranges change which maps are u8 or s8 and their scales, not the
    // work done, so this measures int8 speed without a calibration file.
    auto calibration =
        flags.calibration == "synthetic"
            ? SyntheticCalibration(flags.model, flags.weights, flags.input_size)
            : ghostserve::model::ReadCalibrationFile(flags.calibration);
    if (!calibration.ok()) {
      std::cerr << "ghostserve-model-bench: " << calibration.status().message() << "\n";
      return 2;
    }
    flags.inference.calibration =
        std::make_shared<const ghostserve::model::Calibration>(std::move(*calibration));
  }
  const auto& inference = flags.inference;

  const int used_threads = ghostserve::model::ConfigureThreads(flags.threads);
  auto net = ghostserve::model::BuiltinModelOptions(model);
  if (!net.ok()) {
    std::cerr << "ghostserve-model-bench: " << net.status().message() << "\n" << app.help();
    return 2;
  }
  if (flags.input_size > 0) net->input_size = flags.input_size;
  LoadModelOptions load;
  load.name = model;
  load.net = *net;
  load.weights_path = flags.weights;
  load.inference = inference;
  auto loaded = LoadModel(load);
  if (!loaded.ok()) {
    std::cerr << "ghostserve-model-bench: " << loaded.status().message() << "\n";
    return 1;
  }
  const auto& m = **loaded;
  const int64_t side = m.options.input_size;

  nlohmann::ordered_json out;
  out["model"] = model;
  out["threads"] = used_threads;
  out["parameters"] = m.parameters;
  out["macs"] = m.macs;
  out["input_size"] = side;
  out["engine"] = inference.planned ? "planned" : "aten";
  out["precision"] = std::string(ghostserve::model::PrecisionName(inference.precision));
  if (inference.calibration != nullptr) out["calibration"] = flags.calibration;
  out["cpu_isa"] = ghostserve::model::CpuIsaName();
  out["tune_threads"] = inference.planned && inference.tune_threads;
  if (!inference.planned) {
    out["channels_last"] = inference.channels_last;
    out["force_onednn"] = inference.force_onednn;
  }
  out["results"] = nlohmann::ordered_json::array();
  for (int bs : flags.batch_sizes) {
    torch::Tensor x = torch::randn({bs, m.options.in_channels, side, side});
    // The first call at a batch size also builds the planned engine's plan.
    const auto first = std::chrono::steady_clock::now();
    *m.inference->Forward(x);
    const double first_call_ms = std::chrono::duration<double, std::milli>(
                                     std::chrono::steady_clock::now() - first)
                                     .count();
    for (int i = 1; i < flags.warmup; ++i) *m.inference->Forward(x);
    std::vector<double> latencies_ms;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (elapsed < flags.seconds || latencies_ms.size() < 3) {
      const auto t0 = std::chrono::steady_clock::now();
      torch::Tensor y = *m.inference->Forward(x);
      const auto t1 = std::chrono::steady_clock::now();
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      elapsed = std::chrono::duration<double>(t1 - start).count();
    }
    nlohmann::ordered_json r;
    r["batch_size"] = bs;
    r["images_per_second"] = bs * latencies_ms.size() / elapsed;
    r["latency_ms_p50"] = Percentile(latencies_ms, 0.5);
    r["latency_ms_p90"] = Percentile(latencies_ms, 0.9);
    r["iterations"] = latencies_ms.size();
    r["first_call_ms"] = first_call_ms;
    r["workspace_bytes"] = m.inference->WorkspaceBytes();
    out["results"].push_back(r);
    if (!flags.json) {
      std::printf("%-14s batch %4d  %8.1f img/s  p50 %8.2f ms\n", model.c_str(), bs,
                  r["images_per_second"].get<double>(), r["latency_ms_p50"].get<double>());
      std::fflush(stdout);
    }
  }
  if (flags.json) std::cout << out.dump() << std::endl;
  return 0;
}
