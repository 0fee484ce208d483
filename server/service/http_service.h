// The HTTP front-end: KServe v2 REST, the one-line classify endpoint, the
// model list, the try-it page and /metrics, routed onto the same core
// request path as gRPC (same conversions, validation, batches, metrics and
// bearer token).
//
//   GET  /                                   the try-it page
//   GET  /metrics, /healthz                  Prometheus text; "ok"
//   GET  /v1/models                          ListModels as JSON
//   POST /v1/models/{m}:classify[?top_k=K]   body: the image (or a form)
//   GET  /v2                                 KServe server metadata
//   GET  /v2/health/live, /v2/health/ready   200, or 400 when not (KServe)
//   GET  /v2/models/{m}[/versions/{v}]       model metadata
//   GET  /v2/models/{m}[/versions/{v}]/ready 200, or 400 when not ready
//   POST /v2/models/{m}[/versions/{v}]/infer KServe inference (JSON, binary)
#ifndef GHOSTSERVE_SERVER_SERVICE_HTTP_SERVICE_H_
#define GHOSTSERVE_SERVER_SERVICE_HTTP_SERVICE_H_

#include <prometheus/collectable.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/core/inference_core.h"
#include "server/core/model_repository.h"
#include "server/http/http_server.h"
#include "server/metrics/metrics.h"
#include "server/service/auth.h"
#include "server/service/request_recorder.h"

namespace ghostserve::service {

class HttpService : public http::HttpHandler {
 public:
  // `metrics_only`: serve only /metrics and /healthz (the --metrics-listen
  // port). Everything is borrowed and must outlive the service; `metrics`
  // and `auth` may be null; so may `repository` (no model repository: load
  // and unload are refused).
  HttpService(core::InferenceCore* core, metrics::ServerMetrics* metrics, const BearerAuth* auth,
              std::string version,
              std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
              bool metrics_only = false, core::ModelRepository* repository = nullptr,
              AccessLog* log = nullptr);

  std::optional<http::Response> CheckHeader(const http::RequestHeader& header,
                                            const std::string& peer) override;
  void Handle(std::shared_ptr<http::Request> request, const std::string& peer,
              http::Responder respond) override;

  // A matched endpoint (http_service.cc).
  struct Route;

 private:
  void Classify(const Route& route, std::shared_ptr<http::Request> request, CallInfo info,
                http::Responder respond);
  void KServeInfer(const Route& route, std::shared_ptr<http::Request> request, CallInfo info,
                   http::Responder respond);
  http::Response ListModels() const;
  http::Response Metrics() const;
  bool Ready() const;

  core::InferenceCore* const core_;
  metrics::ServerMetrics* const metrics_;
  const BearerAuth* const auth_;
  const std::string version_;
  const std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  const bool metrics_only_;
  core::ModelRepository* const repository_;
  AccessLog* const log_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_HTTP_SERVICE_H_
