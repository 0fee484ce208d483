#include "server/metrics/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

namespace ghostserve::metrics {
namespace {

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     prometheus::MetricType type, double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(m);
  return f;
}

int CountDir(const char* path) {
  DIR* d = opendir(path);
  if (d == nullptr) return 0;
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n > 2 ? n - 2 : 0;  // "." and ".."
}

}  // namespace

const char* ProtocolName(Protocol protocol) {
  return protocol == Protocol::kHttp ? "http" : "grpc";
}

const std::vector<double>& ServerMetrics::LatencyBuckets() {
  // 100us .. 10s: batch-1 inference is ~5 ms here, queueing adds up to the
  // batch delay, and overload pushes into seconds.
  static const auto* const kBuckets = new std::vector<double>{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035,
      0.05,   0.075,   0.1,    0.15,  0.25,   0.5,   1.0,    2.5,  5.0,   10.0};
  return *kBuckets;
}

const std::vector<double>& ServerMetrics::RefusalBuckets() {
  static const auto* const kBuckets =
      new std::vector<double>{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                              0.005,   0.01,     0.025,   0.05,   0.1,     0.25,   1.0};
  return *kBuckets;
}

const std::vector<double>& ServerMetrics::BatchSizeBuckets() {
  static const auto* const kBuckets =
      new std::vector<double>{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128};
  return *kBuckets;
}

ServerMetrics::ServerMetrics(prometheus::Registry* registry,
                             const std::vector<std::string>& models) {
  requests_ = &prometheus::BuildCounter()
                   .Name("ghostserve_requests_total")
                   .Help("Finished requests by model, protocol (grpc, http) and gRPC status code.")
                   .Register(*registry);
  request_ = &prometheus::BuildHistogram()
                  .Name("ghostserve_request_duration_seconds")
                  .Help("Time from a request's arrival to its answer, by model and protocol.")
                  .Register(*registry);
  queue_ = &prometheus::BuildHistogram()
                .Name("ghostserve_queue_duration_seconds")
                .Help("Time an image waited in its model's batch queue.")
                .Register(*registry);
  preprocess_ = &prometheus::BuildHistogram()
                     .Name("ghostserve_preprocess_duration_seconds")
                     .Help("Decode, resize, crop and normalise time per image.")
                     .Register(*registry);
  inference_ = &prometheus::BuildHistogram()
                    .Name("ghostserve_inference_duration_seconds")
                    .Help("Forward pass time per batch.")
                    .Register(*registry);
  batch_ = &prometheus::BuildHistogram()
                .Name("ghostserve_batch_size")
                .Help("Images per executed batch.")
                .Register(*registry);
  wait_ = &prometheus::BuildHistogram()
               .Name("ghostserve_preprocess_wait_seconds")
               .Help("Time an image waited for a preprocessing thread after it was accepted.")
               .Register(*registry);
  refusal_ = &prometheus::BuildHistogram()
                  .Name("ghostserve_refusal_duration_seconds")
                  .Help(
                      "Arrival to answer of requests answered UNAVAILABLE (budgets full, "
                      "draining): how fast an overloaded server says no.")
                  .Register(*registry);
  decodes_ = &prometheus::BuildCounter()
                  .Name("ghostserve_decodes_total")
                  .Help("Encoded images handed to the decoder.")
                  .Register(*registry);
  admitted_ = &prometheus::BuildGauge()
                   .Name("ghostserve_admitted_images")
                   .Help(
                       "Images accepted and not yet answered, per model (the admission "
                       "budget's use).")
                   .Register(*registry);
  refusals_ = &prometheus::BuildCounter()
                   .Name("ghostserve_refusals_total")
                   .Help("Requests refused before any work, by reason.")
                   .Register(*registry);
  held_bytes_ = &prometheus::BuildGauge()
                     .Name("ghostserve_held_input_bytes")
                     .Help(
                         "Bytes of request inputs (encoded images, tensors) held by accepted "
                         "requests (the byte budget's use).")
                     .Register(*registry)
                     .Add({});
  depth_ = &prometheus::BuildGauge()
                .Name("ghostserve_queue_depth")
                .Help("Images waiting in the model's batch queue.")
                .Register(*registry);
  weights_ = &prometheus::BuildGauge()
                  .Name("ghostserve_model_weight_bytes")
                  .Help("Bytes of compiled weights held per model.")
                  .Register(*registry);
  inflight_ = &prometheus::BuildGauge()
                   .Name("ghostserve_inflight_requests")
                   .Help("Requests received and not yet answered.")
                   .Register(*registry)
                   .Add({});
  plan_wide_ = &prometheus::BuildGauge()
                    .Name("ghostserve_thread_plan_wide")
                    .Help(
                        "1 while the adaptive thread plan gives a lone batch all CPUs, 0 while "
                        "it runs one single-threaded executor per CPU; always 0 with a fixed plan.")
                    .Register(*registry)
                    .Add({});
  plan_switches_ = &prometheus::BuildCounter()
                        .Name("ghostserve_thread_plan_switches_total")
                        .Help("Mode changes of the adaptive thread plan.")
                        .Register(*registry)
                        .Add({});
  model_loads_ = &prometheus::BuildCounter()
                      .Name("ghostserve_model_loads_total")
                      .Help(
                          "Model version loads from the model repository, by outcome (ok, "
                          "failed: the version is not served and any older one keeps serving).")
                      .Register(*registry);
  model_unloads_ = &prometheus::BuildCounter()
                        .Name("ghostserve_model_unloads_total")
                        .Help("Model versions unloaded (drained, then freed).")
                        .Register(*registry);
  for (const auto& name : models) AddModel(name);
  AddModel("unknown");
}

void ServerMetrics::AddModel(const std::string& name) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (models_.count(name) != 0) return;
  ModelMetrics m;
  const prometheus::Labels labels{{"model", name}};
  for (int p = 0; p < kProtocolCount; ++p) {
    m.request_seconds[p] = &request_->Add(
        {{"model", name}, {"protocol", ProtocolName(static_cast<Protocol>(p))}}, LatencyBuckets());
  }
  m.queue_seconds = &queue_->Add(labels, LatencyBuckets());
  m.preprocess_seconds = &preprocess_->Add(labels, LatencyBuckets());
  m.inference_seconds = &inference_->Add(labels, LatencyBuckets());
  m.batch_size = &batch_->Add(labels, BatchSizeBuckets());
  m.preprocess_wait_seconds = &wait_->Add(labels, LatencyBuckets());
  m.refusal_seconds = &refusal_->Add(labels, RefusalBuckets());
  m.decodes = &decodes_->Add(labels);
  m.admitted_images = &admitted_->Add(labels);
  m.queue_depth = &depth_->Add(labels);
  m.weight_bytes = &weights_->Add(labels);
  models_[name] = m;
}

void ServerMetrics::CountModelLoad(const std::string& model, bool ok) {
  AddModel(model);
  model_loads_->Add({{"model", model}, {"outcome", ok ? "ok" : "failed"}}).Increment();
}

void ServerMetrics::CountModelUnload(const std::string& model) {
  model_unloads_->Add({{"model", model}}).Increment();
}

ModelMetrics* ServerMetrics::ForModel(const std::string& model) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) it = models_.find("unknown");
  return &it->second;
}

void ServerMetrics::RecordRequest(const std::string& model, Protocol protocol,
                                  const std::string& code, double seconds) {
  CountRequest(model, protocol, code);
  ModelMetrics* m = ForModel(model);
  m->request_seconds[static_cast<int>(protocol)]->Observe(seconds);
  if (code == "UNAVAILABLE") m->refusal_seconds->Observe(seconds);
}

std::string ServerMetrics::Label(const std::string& model) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return models_.count(model) ? model : "unknown";
}

void ServerMetrics::CountRefusal(const std::string& model, const std::string& reason) {
  const std::string label = Label(model);
  refusals_->Add({{"model", label}, {"reason", reason}}).Increment();
}

void ServerMetrics::CountRequest(const std::string& model, Protocol protocol,
                                 const std::string& code) {
  const std::string label = Label(model);
  requests_->Add({{"model", label}, {"protocol", ProtocolName(protocol)}, {"code", code}})
      .Increment();
}

void ServerMetrics::SetThreadPlan(bool wide, bool switched) {
  plan_wide_->Set(wide ? 1.0 : 0.0);
  if (switched) plan_switches_->Increment();
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * sysconf(_SC_PAGESIZE);
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  const int64_t page = sysconf(_SC_PAGESIZE);
  out.push_back(GaugeFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                            prometheus::MetricType::Gauge, static_cast<double>(resident * page)));
  out.push_back(GaugeFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                            prometheus::MetricType::Gauge, static_cast<double>(size * page)));
  out.push_back(GaugeFamily("process_open_fds", "Number of open file descriptors.",
                            prometheus::MetricType::Gauge, CountDir("/proc/self/fd")));
  out.push_back(GaugeFamily("process_threads", "Number of OS threads in the process.",
                            prometheus::MetricType::Gauge, CountDir("/proc/self/task")));
  // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks.
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');
  double cpu = 0;
  if (close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    int64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stoll(field);
      if (i == 15) stime = std::stoll(field);
    }
    cpu = static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
  }
  out.push_back(GaugeFamily("process_cpu_seconds_total",
                            "User and system CPU time spent in seconds.",
                            prometheus::MetricType::Counter, cpu));
  return out;
}

}  // namespace ghostserve::metrics
