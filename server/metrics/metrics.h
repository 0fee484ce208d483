// Prometheus metrics of the server. Labels come only from bounded sets: the
// configured model names (plus "unknown") and gRPC status code names.
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

  // The series for `model`, or those labelled "unknown" for a name that is
  // not served (so a client cannot create series).
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
  prometheus::Gauge* inflight() { return inflight_; }
  prometheus::Gauge* held_bytes() { return held_bytes_; }

  static const std::vector<double>& LatencyBuckets();
  static const std::vector<double>& BatchSizeBuckets();
  // 10 us .. 1 s: a refusal should take microseconds.
  static const std::vector<double>& RefusalBuckets();

 private:
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* refusals_;
  prometheus::Gauge* inflight_;
  prometheus::Gauge* held_bytes_;
  prometheus::Gauge* plan_wide_;
  prometheus::Counter* plan_switches_;
  std::map<std::string, ModelMetrics> models_;  // fixed after construction
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
