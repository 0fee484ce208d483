#include "server/service/kserve_service.h"

#include <memory>
#include <utility>

#include "server/service/classifier_service.h"
#include "server/service/kserve_conversion.h"
#include "server/service/request_recorder.h"
#include "server/service/status_map.h"

namespace ghostserve::service {
namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* ctx,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_live(true);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* ctx,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_ready(core_->ready() && core_->accepting());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  // As Triton: an unknown model or version is not ready, not an error.
  auto s = core_->Find(request->name());
  response->set_ready(s.ok() && CheckVersion(**s, request->version()).ok() && core_->ready() &&
                      core_->accepting());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_name("ghostserve");
  response->set_version(version_);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto found = core_->Find(request->name());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
  if (auto v = CheckVersion(**found, request->version()); !v.ok()) {
    return Done(ctx, ToGrpcStatus(v));
  }
  ToModelMetadata(**found, response);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelConfig(grpc::CallbackServerContext* ctx,
                                                     const inference::ModelConfigRequest* request,
                                                     inference::ModelConfigResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto found = core_->Find(request->name());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
  if (auto v = CheckVersion(**found, request->version()); !v.ok()) {
    return Done(ctx, ToGrpcStatus(v));
  }
  ToModelConfig(**found, core_->executor().size(), response->mutable_config());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelStatistics(
    grpc::CallbackServerContext* ctx, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  // No name: every model, as Triton.
  if (request->name().empty()) {
    for (const auto& s : core_->servables()) ToModelStatistics(*s, response->add_model_stats());
    return Done(ctx, grpc::Status::OK);
  }
  auto found = core_->Find(request->name());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
  if (auto v = CheckVersion(**found, request->version()); !v.ok()) {
    return Done(ctx, ToGrpcStatus(v));
  }
  ToModelStatistics(**found, response->add_model_stats());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::RepositoryIndex(
    grpc::CallbackServerContext* ctx, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  ToRepositoryIndex(core_->servables(), core_->ready() && core_->accepting(), core_->ready(),
                    request->ready(), response);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelInferRequest* request,
                                                    inference::ModelInferResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto* reactor = ctx->DefaultReactor();
  auto finish = [reactor, recorder = RequestRecorder(metrics_, core_->clock(),
                                                     request->model_name())](grpc::Status status) {
    recorder.Record(status);
    reactor->Finish(std::move(status));
  };
  auto call = FromKServe(*request);
  if (!call.ok()) {
    finish(ToGrpcStatus(call.status()));
    return reactor;
  }
  core::InferRequest& infer = call->request;
  infer.deadline_us = EarlierDeadline(DeadlineOnClock(*ctx, *core_->clock()),
                                      TimeoutDeadline(*core_->clock(), call->timeout_us));
  infer.is_cancelled = [ctx] { return ctx->IsCancelled(); };
  core_->Infer(std::move(infer), [request, response, outputs = call->outputs,
                                  finish](absl::StatusOr<core::InferResult> r) {
    if (r.ok()) ToKServe(*request, *r, outputs, response);
    finish(r.ok() ? grpc::Status::OK : ToGrpcStatus(r.status()));
  });
  return reactor;
}

}  // namespace ghostserve::service
