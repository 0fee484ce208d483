#include "server/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"

namespace ghostserve::service {
namespace {

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const ServerOptions& o) {
  if (o.tls_cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      o.tls_client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                  : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = o.tls_client_ca_pem;
  ssl.pem_key_cert_pairs.push_back({o.tls_key_pem, o.tls_cert_pem});
  return grpc::SslServerCredentials(ssl);
}

// gRPC takes "infinite" as INT_MAX.
int OrInfinite(int ms) { return ms == 0 ? std::numeric_limits<int>::max() : ms; }

void ApplyConnectionLimits(const ServerOptions& o, grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o.keepalive_timeout_ms);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              o.keepalive_min_ping_interval_ms);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, o.keepalive_max_ping_strikes);
  // Without this, gRPC allows a client at most one ping per two hours while
  // it has no call open, so the common client setting (keepalive pings on
  // idle pooled connections every 10-60 s) would get GOAWAY too_many_pings.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, o.max_concurrent_streams);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, OrInfinite(o.max_connection_age_ms));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, o.max_connection_age_grace_ms);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              OrInfinite(o.max_connection_idle_ms));
  if (o.grpc_memory_bytes > 0 || o.grpc_max_threads > 0) {
    grpc::ResourceQuota quota("ghostserve");
    if (o.grpc_memory_bytes > 0) quota.Resize(static_cast<size_t>(o.grpc_memory_bytes));
    if (o.grpc_max_threads > 0) quota.SetMaxThreads(o.grpc_max_threads);
    builder->SetResourceQuota(quota);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<GhostServer>> GhostServer::Create(
    const ServerOptions& options, core::InferenceCore* core,
    std::shared_ptr<prometheus::Registry> registry, metrics::ServerMetrics* metrics,
    core::ModelRepository* repository) {
  std::unique_ptr<GhostServer> s(new GhostServer());
  s->core_ = core;
  s->registry_ = std::move(registry);
  s->auth_ = std::make_unique<BearerAuth>(options.auth_token, metrics);
  auto log = AccessLog::Open({options.access_log, options.access_log_sample});
  if (!log.ok()) return log.status();
  s->access_log_ = std::move(*log);
  AccessLog* access_log = s->access_log_.get();
  s->classifier_ = std::make_unique<ClassifierService>(core, metrics, s->auth_.get(), access_log);
  s->kserve_ = std::make_unique<KServeService>(core, metrics, options.version, s->auth_.get(),
                                               repository, access_log);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const bool tls = !options.tls_cert_pem.empty();
  builder.AddListeningPort(options.listen, MakeServerCredentials(options), &s->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(64 << 20);
  ApplyConnectionLimits(options, &builder);
  builder.RegisterService(s->classifier_.get());
  builder.RegisterService(s->kserve_.get());
  s->reflection_v1_ = std::make_unique<ReflectionV1Service>(std::vector<std::string>{
      "ghostserve.v1.Classifier", "inference.GRPCInferenceService", "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"});
  builder.RegisterService(s->reflection_v1_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        tls ? " (with TLS: check that --tls-key belongs to --tls-cert and both are valid PEM)"
            : ""));
  }
  s->SetServing(false);  // until the models are warm

  const std::vector<std::shared_ptr<prometheus::Collectable>> collectables{
      s->registry_, std::make_shared<metrics::ProcessCollector>()};
  if (!options.http_listen.empty()) {
    http::HttpServerOptions ho = options.http;
    ho.listen = options.http_listen;
    ho.max_body_bytes = static_cast<uint64_t>(options.max_receive_message_bytes);
    ho.tls_cert_pem = options.tls_cert_pem;
    ho.tls_key_pem = options.tls_key_pem;
    ho.tls_client_ca_pem = options.tls_client_ca_pem;
    s->http_service_ =
        std::make_unique<HttpService>(core, metrics, s->auth_.get(), options.version, collectables,
                                      /*metrics_only=*/false, repository, access_log);
    auto started = http::HttpServer::Start(ho, s->http_service_.get());
    if (!started.ok()) {
      s->server_->Shutdown();
      return started.status();
    }
    s->http_server_ = std::move(*started);
  }
  if (!options.metrics_listen.empty()) {
    // Plaintext and open, as Prometheus scrapes it; a small server.
    http::HttpServerOptions mo;
    mo.listen = options.metrics_listen;
    mo.io_threads = 1;
    mo.max_connections = 64;
    mo.max_body_bytes = 0;
    s->metrics_service_ = std::make_unique<HttpService>(core, metrics, nullptr, options.version,
                                                        collectables, /*metrics_only=*/true);
    auto started = http::HttpServer::Start(mo, s->metrics_service_.get());
    if (!started.ok()) {
      if (s->http_server_) s->http_server_->Stop();
      s->server_->Shutdown();
      return started.status();
    }
    s->metrics_server_ = std::move(*started);
    s->metrics_port_ = s->metrics_server_->port();
  }
  return s;
}

GhostServer::~GhostServer() {
  if (!shut_down_) Shutdown(0);
}

void GhostServer::SetServing(bool serving) {
  auto* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  for (const char* name : {"ghostserve.v1.Classifier", "inference.GRPCInferenceService"}) {
    health->SetServingStatus(name, serving);
  }
  {
    std::lock_guard<std::mutex> lock(health_mu_);
    serving_ = serving;
  }
  UpdateModelHealth();
}

void GhostServer::UpdateModelHealth() {
  auto* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  std::lock_guard<std::mutex> lock(health_mu_);
  // Per model, under the model's name, so a probe can ask for one model.
  std::set<std::string> served;
  for (const auto& s : core_->servables()) served.insert(s->name());
  for (const auto& name : served) health->SetServingStatus(name, serving_);
  for (const auto& name : health_models_) {
    if (served.count(name) == 0) health->SetServingStatus(name, false);
  }
  health_models_.insert(served.begin(), served.end());
}

bool GhostServer::Shutdown(int64_t grace_ms) {
  if (shut_down_) return true;
  shut_down_ = true;
  SetServing(false);
  core_->StopAccepting();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  const bool drained = core_->WaitIdle(grace_ms * 1000);
  // gRPC ends calls that have reached it but no handler yet when Shutdown
  // begins with CANCELLED (grpc/grpc#41785, open in 1.51), and calls keep
  // arriving until clients see the GOAWAY. Callers refused with UNAVAILABLE
  // back off (or the load balancer stops sending), so wait, within the grace
  // period, until no request has reached a handler for kQuietMs. This
  // narrows the window but cannot close it: a call can wait in gRPC's queue
  // longer than that on a starved CPU (measured: on an idle machine 3 of 5
  // drains under looping callers had a CANCELLED without the wait, 0 of 10
  // with it; with both cores busy, 8 of 15 and 6 of 20).
  constexpr int64_t kQuietMs = 50;
  while (std::chrono::steady_clock::now() < deadline &&
         core_->clock()->NowMicros() - core_->last_arrival_us() < kQuietMs * 1000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Requests still running after the grace period are cancelled by gRPC;
  // HTTP ones are dropped with their connections.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  if (http_server_) http_server_->Stop();
  if (metrics_server_) metrics_server_->Stop();
  return drained;
}

void GhostServer::Wait() { server_->Wait(); }

}  // namespace ghostserve::service
