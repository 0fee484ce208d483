// The front-ends around an InferenceCore: the gRPC server (Classifier, KServe
// v2, grpc.health.v1, reflection on one port), the HTTP server (KServe v2
// REST, classify, the try-it page, /metrics; http_service.h) and the
// plaintext Prometheus endpoint (its own port).
#ifndef GHOSTSERVE_SERVER_SERVICE_SERVER_H_
#define GHOSTSERVE_SERVER_SERVICE_SERVER_H_

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/inference_core.h"
#include "server/http/http_server.h"
#include "server/metrics/metrics.h"
#include "server/service/access_log.h"
#include "server/service/auth.h"
#include "server/service/classifier_service.h"
#include "server/service/http_service.h"
#include "server/service/kserve_service.h"
#include "server/service/reflection_v1.h"

namespace ghostserve::service {

struct ServerOptions {
  // HOST:PORT for gRPC; port 0 picks a free port (see GhostServer::port).
  std::string listen = "0.0.0.0:50051";
  // HOST:PORT for GET /metrics (plaintext); empty disables the endpoint.
  std::string metrics_listen = "0.0.0.0:9464";
  // HOST:PORT for HTTP (TLS and token as for gRPC); empty (the default here;
  // the binary's --http-listen defaults to 0.0.0.0:8000) disables it. `http`'s
  // listen, TLS and max_body_bytes fields are filled from the options above.
  std::string http_listen;
  http::HttpServerOptions http;
  // Largest request message accepted; larger ones get RESOURCE_EXHAUSTED
  // from gRPC before they are read.
  int max_receive_message_bytes = 16 << 20;
  // Reported by ServerMetadata.
  std::string version = "0.1.0";
  // The access log (access_log.h): "" off, "-" standard error, else a file.
  std::string access_log;
  int access_log_sample = 1;

  // Transport security. An empty tls_cert_pem serves plaintext. With
  // tls_cert_pem and tls_key_pem (PEM contents, not paths) the port speaks
  // TLS only; a non-empty tls_client_ca_pem also requires every client to
  // present a certificate signed by one of those CAs (mutual TLS).
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string tls_client_ca_pem;
  // When non-empty, every Classifier and KServe call must carry
  // "authorization: Bearer <auth_token>" (see auth.h); health and reflection
  // stay open.
  std::string auth_token;

  // gRPC connection limits (milliseconds unless noted; defaults as in the
  // README's flag table). 0 disables the age and idle limits.
  // Server keepalive pings: sent after keepalive_time_ms without activity;
  // the connection closes if one is not acknowledged in keepalive_timeout_ms.
  int keepalive_time_ms = 60'000;
  int keepalive_timeout_ms = 20'000;
  // Client pings closer together than this (with no data in between) are
  // strikes; after keepalive_max_ping_strikes of them (0 = unlimited) the
  // server sends GOAWAY ENHANCE_YOUR_CALM ("too_many_pings") and closes.
  int keepalive_min_ping_interval_ms = 10'000;
  int keepalive_max_ping_strikes = 2;
  // Streams (calls) open at once on one connection; more wait in the client.
  int max_concurrent_streams = 100;
  // A connection is sent GOAWAY after max_connection_age_ms (gRPC adds
  // +-10% jitter), so clients re-resolve and reach new pods; its calls then
  // get max_connection_age_grace_ms to finish.
  int max_connection_age_ms = 300'000;
  int max_connection_age_grace_ms = 30'000;
  // A connection with no calls for this long is closed.
  int max_connection_idle_ms = 120'000;
  // gRPC's resource quota: memory its transport may hold, in bytes (0 = no
  // limit), and threads of its synchronous-API pool (0 = no limit).
  int64_t grpc_memory_bytes = int64_t{512} << 20;
  int grpc_max_threads = 0;
};

// Starts serving in Create. Thread-safe. The core, registry and metrics are
// borrowed and must outlive the server.
class GhostServer {
 public:
  // `repository` (may be null) serves the repository extension's load and
  // unload; it must outlive the server too.
  static absl::StatusOr<std::unique_ptr<GhostServer>> Create(
      const ServerOptions& options, core::InferenceCore* core,
      std::shared_ptr<prometheus::Registry> registry, metrics::ServerMetrics* metrics,
      core::ModelRepository* repository = nullptr);
  ~GhostServer();

  int port() const { return port_; }
  // 0 when the metrics endpoint is disabled.
  int metrics_port() const { return metrics_port_; }
  // 0 when HTTP is disabled.
  int http_port() const { return http_server_ ? http_server_->port() : 0; }

  // grpc.health.v1: overall (""), per service, and per model (the model's
  // name as the service name).
  void SetServing(bool serving);
  // Brings the per-model health names in step with the models served now:
  // a model loaded since is added, one unloaded goes NOT_SERVING (the model
  // repository calls this after each change).
  void UpdateModelHealth();

  // Graceful stop: health NOT_SERVING, new requests refused with UNAVAILABLE,
  // accepted ones answered (up to `grace_ms`), then the transport closes.
  // Returns true if every accepted request finished within the grace period.
  bool Shutdown(int64_t grace_ms);

  // Blocks until the server has shut down.
  void Wait();

 private:
  GhostServer() = default;

  core::InferenceCore* core_ = nullptr;
  std::unique_ptr<BearerAuth> auth_;
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<ClassifierService> classifier_;
  std::unique_ptr<KServeService> kserve_;
  std::unique_ptr<ReflectionV1Service> reflection_v1_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<HttpService> http_service_;
  std::unique_ptr<HttpService> metrics_service_;
  std::unique_ptr<http::HttpServer> http_server_;
  std::unique_ptr<http::HttpServer> metrics_server_;
  int port_ = 0;
  int metrics_port_ = 0;
  bool shut_down_ = false;
  std::mutex health_mu_;
  bool serving_ = false;                 // guarded by health_mu_
  std::set<std::string> health_models_;  // guarded by health_mu_: names ever reported
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_SERVER_H_
