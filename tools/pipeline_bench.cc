// ghostserve-pipeline-bench: the serving core in process, with no RPC: the
// same InferenceCore the server builds from the same flags (thread plan,
// batching, admission), fed encoded image files by C closed-loop callers.
// Decode + preprocess + batching + forward, nothing else: the ceiling the
// service is measured against (scripts/bench_service.py).
//
//   ghostserve-pipeline-bench --model ghostnet_100 --concurrency 16
//     --duration 10 --json tests/testdata/*.jpg [-- SERVER FLAGS...]
//
// Prints one JSON line: images/s, latency percentiles (arrival to answer, as
// the server's request histogram measures), errors by code, mean batch size.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "model/threading.h"
#include "nlohmann/json.hpp"
#include "server/batcher/clock.h"
#include "server/config/config.h"
#include "server/core/torch_model.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::cerr << "cannot read " << path << "\n";
    std::exit(2);
  }
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ghostserve;
  std::string model = "ghostnet_100";
  int concurrency = 16;
  double duration = 10, warmup = 2;
  bool json = false;
  std::vector<std::string> files;
  // Everything after "--" goes to the server's flag parser.
  std::vector<std::string> server_flags;
  std::vector<char*> own(argv, argv + argc);
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      server_flags.assign(argv + i + 1, argv + argc);
      own.assign(argv, argv + i);
      break;
    }
  }
  CLI::App app("ghostserve-pipeline-bench: the serving core in process, no RPC");
  app.add_option("--model", model, "served model to send to")->capture_default_str();
  app.add_option("--concurrency", concurrency, "requests in flight (closed loop)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--duration", duration, "measured seconds")->capture_default_str();
  app.add_option("--warmup", warmup, "unmeasured seconds first")->capture_default_str();
  app.add_flag("--json", json, "one JSON line on stdout");
  app.add_option("files", files, "encoded images (JPEG, PNG), sent round robin")->required();
  try {
    app.parse(static_cast<int>(own.size()), own.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  server_flags.push_back("--models");
  server_flags.push_back(model);
  auto parsed = config::ParseConfig(server_flags, {});
  if (!parsed.ok()) {
    std::cerr << parsed.status().message() << "\n";
    return 2;
  }
  config::ServerConfig cfg = *parsed;
  const int cpus = model::AvailableCpus();
  if (auto s = config::Finalize(&cfg, cpus); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 2;
  }
  // As the server: the main thread never leads an OpenMP team.
  model::ConfigureThreads(1);
  auto core = core::CreateInferenceCore(config::CoreOptionsFrom(cfg), config::ModelSpecs(cfg),
                                        batcher::RealClock::Get(), nullptr);
  if (!core.ok()) {
    std::cerr << core.status().message() << "\n";
    return 1;
  }
  if (auto s = (*core)->Warmup(); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 1;
  }
  std::vector<std::string> images;
  for (const auto& f : files) images.push_back(ReadFile(f));

  std::mutex mu;
  std::vector<double> latencies_ms;
  std::map<std::string, int64_t> errors;
  int64_t batch_images = 0, ok = 0;  // sum of batch sizes over answered images
  std::atomic<bool> stop{false};
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(warmup));
  const auto measure_to = measure_from + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(duration));
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      size_t next = static_cast<size_t>(c) % images.size();
      while (!stop.load()) {
        core::InferRequest request;
        request.model = model;
        request.encoded.push_back(images[next]);
        request.top_k = core::InferRequest::kTopKDefault;  // as Classify asks
        next = (next + 1) % images.size();
        std::mutex done_mu;
        std::condition_variable done_cv;
        bool done = false;
        absl::Status status;
        int64_t batch = 0;
        const auto t0 = Clock::now();
        (*core)->Infer(std::move(request), [&](absl::StatusOr<core::InferResult> r) {
          std::lock_guard<std::mutex> lock(done_mu);
          status = r.status();
          if (r.ok()) batch = r->batch_size;
          done = true;
          done_cv.notify_one();
        });
        std::unique_lock<std::mutex> lock(done_mu);
        done_cv.wait(lock, [&] { return done; });
        const auto t1 = Clock::now();
        if (t1 < measure_from || t1 > measure_to) continue;
        std::lock_guard<std::mutex> stats(mu);
        if (status.ok()) {
          ++ok;
          batch_images += batch;
          latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        } else {
          ++errors[absl::StatusCodeToString(status.code())];
        }
      }
    });
  }
  std::this_thread::sleep_until(measure_to);
  stop = true;
  for (auto& t : callers) t.join();

  double mean = 0;
  for (double l : latencies_ms) mean += l;
  if (!latencies_ms.empty()) mean /= static_cast<double>(latencies_ms.size());
  int64_t error_count = 0;
  for (const auto& [code, n] : errors) error_count += n;
  nlohmann::json out{
      {"model", model},
      {"concurrency", concurrency},
      {"duration_s", duration},
      {"files", files.size()},
      {"images", ok},
      {"images_per_second", static_cast<double>(ok) / duration},
      {"errors", error_count},
      {"errors_by_code", errors},
      {"mean_batch_size", ok > 0 ? static_cast<double>(batch_images) / static_cast<double>(ok) : 0},
      {"latency_ms",
       {{"p50", Percentile(latencies_ms, 0.5)},
        {"p90", Percentile(latencies_ms, 0.9)},
        {"p99", Percentile(latencies_ms, 0.99)},
        {"max", Percentile(latencies_ms, 1.0)},
        {"mean", mean}}},
      {"thread_plan", cfg.thread_plan},
      {"executors", cfg.executors},
      {"inference_threads", cfg.inference_threads},
      {"preprocess_threads", cfg.preprocess_threads},
      {"cpus", cpus},
      {"cpu", CpuModel()},
  };
  if (json) {
    std::cout << out.dump() << std::endl;
  } else {
    std::cout << out.dump(2) << std::endl;
  }
  core->reset();
  return 0;
}
