// The gRPC server (Classifier, KServe v2, grpc.health.v1, reflection on one
// port) and the Prometheus endpoint (its own port), around an InferenceCore.
#ifndef GHOSTSERVE_SERVER_SERVICE_SERVER_H_
#define GHOSTSERVE_SERVER_SERVICE_SERVER_H_

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/inference_core.h"
#include "server/metrics/http_exporter.h"
#include "server/metrics/metrics.h"
#include "server/service/classifier_service.h"
#include "server/service/kserve_service.h"

namespace ghostserve::service {

struct ServerOptions {
  // HOST:PORT for gRPC; port 0 picks a free port (see GhostServer::port).
  std::string listen = "0.0.0.0:50051";
  // HOST:PORT for GET /metrics; empty disables the endpoint.
  std::string metrics_listen = "0.0.0.0:9464";
  // Largest request message accepted; larger ones get RESOURCE_EXHAUSTED
  // from gRPC before they are read.
  int max_receive_message_bytes = 16 << 20;
  // Reported by ServerMetadata.
  std::string version = "0.1.0";
};

// Starts serving in Create. Thread-safe. The core, registry and metrics are
// borrowed and must outlive the server.
class GhostServer {
 public:
  static absl::StatusOr<std::unique_ptr<GhostServer>> Create(
      const ServerOptions& options, core::InferenceCore* core,
      std::shared_ptr<prometheus::Registry> registry, metrics::ServerMetrics* metrics);
  ~GhostServer();

  int port() const { return port_; }
  // 0 when the metrics endpoint is disabled.
  int metrics_port() const { return metrics_port_; }

  // grpc.health.v1: overall ("") and per service.
  void SetServing(bool serving);

  // Graceful stop: health NOT_SERVING, new requests refused with UNAVAILABLE,
  // accepted ones answered (up to `grace_ms`), then the transport closes.
  // Returns true if every accepted request finished within the grace period.
  bool Shutdown(int64_t grace_ms);

  // Blocks until the server has shut down.
  void Wait();

 private:
  GhostServer() = default;

  core::InferenceCore* core_ = nullptr;
  std::unique_ptr<ClassifierService> classifier_;
  std::unique_ptr<KServeService> kserve_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<metrics::HttpExporter> exporter_;
  int port_ = 0;
  int metrics_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_SERVER_H_
