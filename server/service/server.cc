#include "server/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>

#include "absl/strings/str_cat.h"

namespace ghostserve::service {

absl::StatusOr<std::unique_ptr<GhostServer>> GhostServer::Create(
    const ServerOptions& options, core::InferenceCore* core,
    std::shared_ptr<prometheus::Registry> registry, metrics::ServerMetrics* metrics) {
  std::unique_ptr<GhostServer> s(new GhostServer());
  s->core_ = core;
  s->registry_ = std::move(registry);
  s->classifier_ = std::make_unique<ClassifierService>(core, metrics);
  s->kserve_ = std::make_unique<KServeService>(core, metrics, options.version);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.RegisterService(s->classifier_.get());
  builder.RegisterService(s->kserve_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  s->SetServing(false);  // until the models are warm

  if (!options.metrics_listen.empty()) {
    auto exporter = metrics::HttpExporter::Start(
        options.metrics_listen, {s->registry_, std::make_shared<metrics::ProcessCollector>()});
    if (!exporter.ok()) {
      s->server_->Shutdown();
      return exporter.status();
    }
    s->exporter_ = std::move(*exporter);
    s->metrics_port_ = s->exporter_->port();
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
}

bool GhostServer::Shutdown(int64_t grace_ms) {
  if (shut_down_) return true;
  shut_down_ = true;
  SetServing(false);
  core_->StopAccepting();
  const bool drained = core_->WaitIdle(grace_ms * 1000);
  // Requests still running after the grace period are cancelled by gRPC.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  return drained;
}

void GhostServer::Wait() { server_->Wait(); }

}  // namespace ghostserve::service
