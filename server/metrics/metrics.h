// Prometheus metrics of the server. Labels come only from bounded sets: the
// model names the operator configured or put in the model repository (plus
// "unknown") and gRPC status code names.
#ifndef GHOSTSERVE_SERVER_METRICS_METRICS_H_
#define GHOSTSERVE_SERVER_METRICS_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

namespace ghostserve::metrics {

// The front-end a request came through: the `protocol` label of
// ghostserve_requests_total and ghostserve_request_duration_seconds.
enum class Protocol { kGrpc = 0, kHttp = 1 };
constexpr int kProtocolCount = 2;
const char* ProtocolName(Protocol protocol);  // "grpc", "http"

// Per-model series. Pointers are owned by the registry and stay valid for
// the registry's lifetime; all are thread-safe.
struct ModelMetrics {
  std::array<prometheus::Histogram*, kProtocolCount> request_seconds{};  // by Protocol
  prometheus::Histogram* queue_seconds = nullptr;
  prometheus::Histogram* preprocess_seconds = nullptr;
  prometheus::Histogram* inference_seconds = nullptr;  // per batch
  prometheus::Histogram* batch_size = nullptr;
  prometheus::Histogram* preprocess_wait_seconds = nullptr;
  // Arrival to answer of requests answered UNAVAILABLE (refused).
  prometheus::Histogram* refusal_seconds = nullptr;
  prometheus::Counter* decodes = nullptr;
  prometheus::Gauge* admitted_images = nullptr;
  prometheus::Gauge* queue_depth = nullptr;
  prometheus::Gauge* weight_bytes = nullptr;
};

// Thread-safe after construction. `registry` is borrowed and must outlive
// this object.
class ServerMetrics {
 public:
  ServerMetrics(prometheus::Registry* registry, const std::vector<std::string>& models);

  // Creates the series of a model loaded after start-up (from the model
  // repository); nothing if it has them. Never called with a name a client
  // sent.
  void AddModel(const std::string& model);
  // The series for `model`, or those labelled "unknown" for a name that is
  // not served (so a client cannot create series). Series are never
  // removed: the pointer stays valid.
  ModelMetrics* ForModel(const std::string& model);
  // Counts one finished request. `code` is a gRPC code name, e.g. "OK",
  // whatever the protocol (HTTP answers map to the same codes).
  void CountRequest(const std::string& model, Protocol protocol, const std::string& code);
  // Counts one finished inference request and observes its latency: what
  // every front-end records once per call.
  void RecordRequest(const std::string& model, Protocol protocol, const std::string& code,
                     double seconds);
  // Counts a request refused on arrival. `reason` is one of a fixed set:
  // draining, model_budget, byte_budget, preprocess_queue, batch_queue.
  void CountRefusal(const std::string& model, const std::string& reason);
  // The adaptive thread plan's mode (inference_executor.h):
  // ghostserve_thread_plan_wide, and a count of changes when `switched`.
  void SetThreadPlan(bool wide, bool switched);
  // ghostserve_model_loads_total{outcome=ok|failed} (adds the model's
  // series) and ghostserve_model_unloads_total.
  void CountModelLoad(const std::string& model, bool ok);
  void CountModelUnload(const std::string& model);
  prometheus::Gauge* inflight() { return inflight_; }
  prometheus::Gauge* held_bytes() { return held_bytes_; }

  static const std::vector<double>& LatencyBuckets();
  static const std::vector<double>& BatchSizeBuckets();
  // 10 us .. 1 s: a refusal should take microseconds.
  static const std::vector<double>& RefusalBuckets();

 private:
  // `model`, or "unknown" if it has no series.
  std::string Label(const std::string& model) const;

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* refusals_;
  prometheus::Family<prometheus::Histogram>* request_;
  prometheus::Family<prometheus::Histogram>* queue_;
  prometheus::Family<prometheus::Histogram>* preprocess_;
  prometheus::Family<prometheus::Histogram>* inference_;
  prometheus::Family<prometheus::Histogram>* batch_;
  prometheus::Family<prometheus::Histogram>* wait_;
  prometheus::Family<prometheus::Histogram>* refusal_;
  prometheus::Family<prometheus::Counter>* decodes_;
  prometheus::Family<prometheus::Gauge>* admitted_;
  prometheus::Family<prometheus::Gauge>* depth_;
  prometheus::Family<prometheus::Gauge>* weights_;
  prometheus::Family<prometheus::Counter>* model_loads_;
  prometheus::Family<prometheus::Counter>* model_unloads_;
  prometheus::Gauge* inflight_;
  prometheus::Gauge* held_bytes_;
  prometheus::Gauge* plan_wide_;
  prometheus::Counter* plan_switches_;
  mutable std::shared_mutex mu_;
  std::map<std::string, ModelMetrics> models_;  // guarded by mu_; never shrinks
};

// process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_threads, process_cpu_seconds_total, read from
// /proc/self at scrape time. Register with Exposer::RegisterCollectable.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// Current resident set size of this process in bytes (0 if unknown).
int64_t ResidentBytes();

}  // namespace ghostserve::metrics

#endif  // GHOSTSERVE_SERVER_METRICS_METRICS_H_
