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
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "model/loaded_model.h"
#include "model/threading.h"
#include "nlohmann/json.hpp"

namespace {

using ghostserve::model::LoadModel;
using ghostserve::model::LoadModelOptions;

constexpr char kUsage[] = R"(usage: ghostserve-model-bench [flags]
  --model NAME          ghostnet_050 | ghostnet_100 | ghostnet_130 (default ghostnet_100)
  --weights PATH        weights file (.pth zip or .safetensors); default: untrained
  --batch-sizes LIST    comma-separated batch sizes (default 1,8,32)
  --seconds S           measured seconds per batch size (default 3)
  --warmup N            unmeasured runs per batch size (default 3)
  --threads N           LibTorch intra-op threads (default: CPUs available)
  --input-size N        square input side (default: the model's, 224)
  --nchw                keep activations NCHW instead of channels-last
  --no-force-onednn     let ATen choose the convolution kernel
  --json                print one JSON line instead of a table
)";

[[noreturn]] void Fail(const std::string& msg) {
  std::cerr << "ghostserve-model-bench: " << msg << "\n" << kUsage;
  std::exit(2);
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "ghostnet_100";
  std::string weights;
  std::vector<int> batch_sizes = {1, 8, 32};
  double seconds = 3.0;
  int warmup = 3;
  int threads = 0;
  int input_size = 0;
  bool json = false;
  ghostserve::model::InferenceOptions inference;

  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail("missing value for " + a);
      return argv[++i];
    };
    auto integer = [&](int lo, int hi) {
      std::string v = value();
      int n;
      if (!absl::SimpleAtoi(v, &n) || n < lo || n > hi) {
        Fail("bad value for " + a + ": " + v);
      }
      return n;
    };
    if (a == "--model") {
      model = value();
    } else if (a == "--weights") {
      weights = value();
    } else if (a == "--batch-sizes") {
      batch_sizes.clear();
      for (absl::string_view s : absl::StrSplit(value(), ',')) {
        int n;
        if (!absl::SimpleAtoi(s, &n) || n < 1 || n > 1024) {
          Fail("bad batch size: " + std::string(s));
        }
        batch_sizes.push_back(n);
      }
    } else if (a == "--seconds") {
      if (!absl::SimpleAtod(value(), &seconds) || seconds <= 0 || seconds > 3600) {
        Fail("bad --seconds");
      }
    } else if (a == "--warmup") {
      warmup = integer(0, 1000);
    } else if (a == "--threads") {
      threads = integer(1, 256);
    } else if (a == "--input-size") {
      input_size = integer(32, 1024);
    } else if (a == "--nchw") {
      inference.channels_last = false;

    } else if (a == "--no-force-onednn") {
      inference.force_onednn = false;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      Fail("unknown flag " + a);
    }
  }

  const int used_threads = ghostserve::model::ConfigureThreads(threads);
  auto net = ghostserve::model::BuiltinModelOptions(model);
  if (!net.ok()) Fail(std::string(net.status().message()));
  if (input_size > 0) net->input_size = input_size;
  LoadModelOptions load;
  load.name = model;
  load.net = *net;
  load.weights_path = weights;
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
  out["channels_last"] = inference.channels_last;
  out["force_onednn"] = inference.force_onednn;
  out["results"] = nlohmann::ordered_json::array();
  for (int bs : batch_sizes) {
    torch::Tensor x = torch::randn({bs, m.options.in_channels, side, side});
    for (int i = 0; i < warmup; ++i) *m.inference->Forward(x);
    std::vector<double> latencies_ms;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (elapsed < seconds || latencies_ms.size() < 3) {
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
    out["results"].push_back(r);
    if (!json) {
      std::printf("%-14s batch %4d  %8.1f img/s  p50 %8.2f ms\n", model.c_str(), bs,
                  r["images_per_second"].get<double>(), r["latency_ms_p50"].get<double>());
      std::fflush(stdout);
    }
  }
  if (json) std::cout << out.dump() << std::endl;
  return 0;
}
