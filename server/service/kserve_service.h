// The KServe v2 / Open Inference Protocol (inference.GRPCInferenceService),
// so Triton and KServe clients and load tools work unchanged.
//
// ModelInfer takes exactly one input, either
//  - FP32 [N, C, H, W] (raw_input_contents or fp32_contents), already
//    preprocessed: it skips decoding and goes straight to the batcher; or
//  - BYTES [N] of encoded JPEG/PNG images (bytes_contents, or raw with each
//    element a 4-byte little-endian length then the bytes), preprocessed by
//    the model's own config.
// Outputs: "logits" and "probabilities", FP32 [N, classes], returned as
// raw_output_contents (as Triton does); `outputs` in the request selects.
#ifndef GHOSTSERVE_SERVER_SERVICE_KSERVE_SERVICE_H_
#define GHOSTSERVE_SERVER_SERVICE_KSERVE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/core/inference_core.h"
#include "server/core/model_repository.h"
#include "server/metrics/metrics.h"
#include "server/service/access_log.h"
#include "server/service/auth.h"

namespace ghostserve::service {

// Thread-safe. `core`, `metrics` and `auth` (both may be null; null auth
// admits every call) are borrowed and must outlive the gRPC server. Every
// method, ServerLive and ServerReady included, checks `auth` first.
class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  // `repository` (may be null: no model repository) serves the repository
  // extension's load and unload; `log` (may be null) is the access log.
  KServeService(core::InferenceCore* core, metrics::ServerMetrics* metrics, std::string version,
                const BearerAuth* auth = nullptr, core::ModelRepository* repository = nullptr,
                AccessLog* log = nullptr)
      : core_(core),
        metrics_(metrics),
        version_(std::move(version)),
        auth_(auth),
        repository_(repository),
        log_(log) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  // Triton's streaming inference (tritonclient's start_stream /
  // async_stream_infer).
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* ctx) override;
  // Triton's extensions (what tritonclient's get_model_config,
  // get_inference_statistics and get_model_repository_index call).
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* ctx,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* ctx,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* ctx,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  // Explicit model control only (core/model_repository.h); answered once the
  // load (warm-up included) or the unload (drain included) has finished.
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* ctx, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* ctx, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;

 private:
  core::InferenceCore* const core_;
  metrics::ServerMetrics* const metrics_;
  const std::string version_;
  const BearerAuth* const auth_;
  core::ModelRepository* const repository_;
  AccessLog* const log_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_KSERVE_SERVICE_H_
