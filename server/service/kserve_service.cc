#include "server/service/kserve_service.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/request_checks.h"
#include "server/service/classifier_service.h"
#include "server/service/kserve_conversion.h"
#include "server/service/request_recorder.h"
#include "server/service/status_map.h"

namespace ghostserve::service {
namespace {

// ghostserve has one repository: its name is "" (any, as Triton's default).
absl::Status CheckRepositoryName(const std::string& name) {
  if (name.empty()) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("unknown repository '", name.substr(0, 128),
                                          "'; ghostserve has one, named \"\""));
}

absl::Status CheckRepositoryRequest(const core::ModelRepository* repository,
                                    const std::string& repository_name, int parameters) {
  if (repository == nullptr) {
    return absl::FailedPreconditionError(
        "no model repository: start the server with --model-repository DIR "
        "--model-control-mode=explicit");
  }
  if (auto s = CheckRepositoryName(repository_name); !s.ok()) return s;
  if (parameters > 0) {
    return absl::InvalidArgumentError(
        "load parameters (Triton's config and file overrides) are not supported: put the "
        "model's files in the repository directory");
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

// Triton's ModelStreamInfer: each request of the stream runs as ModelInfer
// does, up to kWindow at once, and each gets one ModelStreamInferResponse as
// it completes (in completion order, as Triton sends them; clients match
// them by id). A failed request answers with error_message (its id and model
// in infer_response) and the stream goes on. Deletes itself once gRPC is done
// with it and no request still refers to it.
class StreamInferReactor : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                                          inference::ModelStreamInferResponse> {
 public:
  static constexpr size_t kWindow = 32;

  StreamInferReactor(core::InferenceCore* core, metrics::ServerMetrics* metrics, AccessLog* log,
                     grpc::CallbackServerContext* ctx)
      : core_(core),
        metrics_(metrics),
        log_(log),
        ctx_(ctx),
        call_info_(GrpcCallInfo(ctx, "kserve.ModelStreamInfer", log)) {
    reading_ = true;
    StartRead(&read_buf_);
  }

  void OnReadDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    reading_ = false;
    if (!ok || finishing_) {
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    auto request = std::make_shared<inference::ModelInferRequest>(std::move(read_buf_));
    read_buf_.Clear();
    ++in_flight_;
    ResumeReadLocked();
    lock.unlock();
    Run(std::move(request));
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      finishing_ = true;  // the client went away
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed");
    }
    WriteNextLocked();
    ResumeReadLocked();
    MaybeFinishLocked();
  }

  void OnDone() override {
    std::unique_lock<std::mutex> lock(mu_);
    done_ = true;
    gone_->store(true);
    if (in_flight_ == 0) {
      lock.unlock();
      delete this;
    }
  }

 private:
  void Run(std::shared_ptr<inference::ModelInferRequest> request) {
    CallInfo info = call_info_;
    if (log_ != nullptr) {
      info.request_id = request->id();
      info.bytes_in = static_cast<int64_t>(request->ByteSizeLong());
    }
    RequestRecorder recorder(metrics_, core_->clock(), request->model_name(),
                             metrics::Protocol::kGrpc, log_, std::move(info));
    auto fail = [this, request, recorder](const grpc::Status& status) {
      recorder.Record(status);
      inference::ModelStreamInferResponse response;
      response.set_error_message(status.error_message());
      response.mutable_infer_response()->set_model_name(request->model_name());
      response.mutable_infer_response()->set_id(request->id());
      Deliver(std::move(response));
    };
    auto call = FromKServe(*request);
    if (!call.ok()) return fail(ToGrpcStatus(call.status()));
    core::InferRequest& infer = call->request;
    infer.deadline_us = EarlierDeadline(DeadlineOnClock(*ctx_, *core_->clock()),
                                        TimeoutDeadline(*core_->clock(), call->timeout_us));
    infer.is_cancelled = [gone = gone_] { return gone->load(); };
    core_->Infer(std::move(infer), [this, request, outputs = call->outputs, recorder,
                                    fail](absl::StatusOr<core::InferResult> r) {
      if (!r.ok()) return fail(ToGrpcStatus(r.status()));
      inference::ModelStreamInferResponse response;
      ToKServe(*request, *r, outputs, response.mutable_infer_response());
      recorder.Record(grpc::Status::OK, &*r, &response);
      Deliver(std::move(response));
    });
  }

  void Deliver(inference::ModelStreamInferResponse response) {
    std::unique_lock<std::mutex> lock(mu_);
    --in_flight_;
    if (done_) {
      if (in_flight_ == 0) {
        lock.unlock();
        delete this;
      }
      return;
    }
    if (!finishing_) pending_.push_back(std::move(response));
    WriteNextLocked();
    ResumeReadLocked();
    MaybeFinishLocked();
  }

  void ResumeReadLocked() {
    if (!reading_ && !reads_done_ && !finishing_ &&
        static_cast<size_t>(in_flight_) + pending_.size() < kWindow) {
      reading_ = true;
      StartRead(&read_buf_);
    }
  }

  void WriteNextLocked() {
    if (writing_ || finishing_ || pending_.empty()) return;
    write_buf_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    StartWrite(&write_buf_);
  }

  void MaybeFinishLocked() {
    if (finished_ || writing_) return;
    if ((reads_done_ && in_flight_ == 0 && pending_.empty()) || finishing_) {
      // With a read outstanding gRPC completes it with ok=false.
      finished_ = true;
      Finish(finishing_ ? final_status_ : grpc::Status::OK);
    }
  }

  core::InferenceCore* const core_;
  metrics::ServerMetrics* const metrics_;
  AccessLog* const log_;
  grpc::CallbackServerContext* const ctx_;
  const CallInfo call_info_;  // the stream's peer and traceparent
  std::shared_ptr<std::atomic<bool>> gone_ = std::make_shared<std::atomic<bool>>(false);
  std::mutex mu_;
  inference::ModelInferRequest read_buf_;
  inference::ModelStreamInferResponse write_buf_;
  std::deque<inference::ModelStreamInferResponse> pending_;
  int in_flight_ = 0;
  bool reading_ = false;
  bool reads_done_ = false;
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool done_ = false;
  grpc::Status final_status_;
};

}  // namespace

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
KServeService::ModelStreamInfer(grpc::CallbackServerContext* ctx) {
  if (auth_ != nullptr) {
    if (grpc::Status status = auth_->Check(*ctx); !status.ok()) {
      return new RefusedBidiReactor<inference::ModelInferRequest,
                                    inference::ModelStreamInferResponse>(std::move(status));
    }
  }
  return new StreamInferReactor(core_, metrics_, log_, ctx);
}

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
  response->set_ready(core_->Find(request->name(), request->version()).ok() && core_->ready() &&
                      core_->accepting());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_name("ghostserve");
  response->set_version(version_);
  for (const auto& e : ServerExtensions()) response->add_extensions(e);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto found = core_->Find(request->name(), request->version());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
  ToModelMetadata(**found, core_->versions(request->name()), response);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelConfig(grpc::CallbackServerContext* ctx,
                                                     const inference::ModelConfigRequest* request,
                                                     inference::ModelConfigResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto found = core_->Find(request->name(), request->version());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
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
  auto found = core_->Find(request->name(), request->version());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
  ToModelStatistics(**found, response->add_model_stats());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::RepositoryIndex(
    grpc::CallbackServerContext* ctx, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  if (auto s = CheckRepositoryName(request->repository_name()); !s.ok()) {
    return Done(ctx, ToGrpcStatus(s));
  }
  ToRepositoryIndex(
      core_->servables(),
      repository_ != nullptr ? repository_->Index() : std::vector<core::ModelVersionState>{},
      core_->ready() && core_->accepting(), core_->ready(), request->ready(), response);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::RepositoryModelLoad(
    grpc::CallbackServerContext* ctx, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  if (auto s = CheckRepositoryRequest(repository_, request->repository_name(),
                                      request->parameters().size());
      !s.ok()) {
    return Done(ctx, ToGrpcStatus(s));
  }
  auto* reactor = ctx->DefaultReactor();
  repository_->Load(request->model_name(),
                    [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); });
  return reactor;
}

grpc::ServerUnaryReactor* KServeService::RepositoryModelUnload(
    grpc::CallbackServerContext* ctx, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  // Triton's one unload parameter, unload_dependents, means nothing here.
  int parameters = request->parameters().size();
  if (request->parameters().count("unload_dependents") != 0) --parameters;
  if (auto s = CheckRepositoryRequest(repository_, request->repository_name(), parameters);
      !s.ok()) {
    return Done(ctx, ToGrpcStatus(s));
  }
  auto* reactor = ctx->DefaultReactor();
  repository_->Unload(request->model_name(),
                      [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); });
  return reactor;
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelInferRequest* request,
                                                    inference::ModelInferResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto* reactor = ctx->DefaultReactor();
  CallInfo info = GrpcCallInfo(ctx, "kserve.ModelInfer", log_);
  if (log_ != nullptr) {
    info.request_id = request->id();
    info.bytes_in = static_cast<int64_t>(request->ByteSizeLong());
  }
  auto finish = [reactor, response,
                 recorder = RequestRecorder(metrics_, core_->clock(), request->model_name(),
                                            metrics::Protocol::kGrpc, log_, std::move(info))](
                    grpc::Status status, const core::InferResult* result) {
    recorder.Record(status, result, result != nullptr ? response : nullptr);
    reactor->Finish(std::move(status));
  };
  auto call = FromKServe(*request);
  if (!call.ok()) {
    finish(ToGrpcStatus(call.status()), nullptr);
    return reactor;
  }
  core::InferRequest& infer = call->request;
  infer.deadline_us = EarlierDeadline(DeadlineOnClock(*ctx, *core_->clock()),
                                      TimeoutDeadline(*core_->clock(), call->timeout_us));
  infer.is_cancelled = [ctx] { return ctx->IsCancelled(); };
  core_->Infer(std::move(infer), [request, response, outputs = call->outputs,
                                  finish](absl::StatusOr<core::InferResult> r) {
    if (r.ok()) ToKServe(*request, *r, outputs, response);
    finish(r.ok() ? grpc::Status::OK : ToGrpcStatus(r.status()), r.ok() ? &*r : nullptr);
  });
  return reactor;
}

}  // namespace ghostserve::service
