// KServe v2 (inference.GRPCInferenceService) messages <-> the core's requests
// and results. Pure functions: the handlers in kserve_service.cc only move
// data between gRPC and these.
#ifndef GHOSTSERVE_SERVER_SERVICE_KSERVE_CONVERSION_H_
#define GHOSTSERVE_SERVER_SERVICE_KSERVE_CONVERSION_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "server/core/model_repository.h"
#include "server/core/request.h"
#include "server/core/servable.h"

namespace ghostserve::service {

// The outputs a ModelInferRequest asked for (all when it names none).
struct KServeOutputs {
  bool logits = true;
  bool probabilities = true;
  // Triton's classification extension: an output asked for with the
  // parameter classification=K comes back as BYTES [N, K] holding
  // "score:index:label" for its K best classes (0 = the plain FP32 tensor).
  int64_t logits_class_count = 0;
  int64_t probabilities_class_count = 0;
};

struct KServeCall {
  core::InferRequest request;
  KServeOutputs outputs;
  // Triton's "timeout" request parameter (microseconds; 0 = none): the
  // caller turns it into request.deadline_us on its clock.
  int64_t timeout_us = 0;
};

// Checks what the protocol fixes (one input, named as ModelMetadata says:
// "images" BYTES [N] or "input" FP32 [N, C, H, W]; contents that hold exactly
// what the shape says; known output names and parameters) and
// leaves the rest (model, version, image count and shape, sizes) to the core.
// The inputs are borrowed from `request`, which must outlive the core call.
absl::StatusOr<KServeCall> FromKServe(const inference::ModelInferRequest& request);

// Splits a raw BYTES tensor (each element a uint32 little-endian length, then
// that many bytes) into `count` views of `raw`; InvalidArgument if it does
// not hold exactly that.
absl::Status SplitRawBytes(const std::string& raw, int64_t count,
                           std::vector<std::string_view>* out);

// The protocol extensions ServerMetadata names, gRPC and REST alike:
// Triton's names for what ghostserve serves (classification,
// model_configuration, statistics, model_repository with
// unload_dependents accepted, binary_tensor_data for REST).
const std::vector<std::string>& ServerExtensions();

// Fills `response` with the requested outputs of `result`.
void ToKServe(const inference::ModelInferRequest& request, const core::InferResult& result,
              const KServeOutputs& outputs, inference::ModelInferResponse* response);

// `versions`: every version of the model served (InferenceCore::versions).
void ToModelMetadata(const core::Servable& servable, const std::vector<int64_t>& versions,
                     inference::ModelMetadataResponse* response);

// Triton's ModelConfig of a servable: max_batch_size, inputs "images"
// (TYPE_STRING, dims [1]) and "input" (TYPE_FP32 NCHW [C, H, W]), outputs
// (TYPE_FP32 [classes]), `executors` CPU instances, dynamic batching with the
// batcher's delay and two priority levels.
void ToModelConfig(const core::Servable& servable, int executors, inference::ModelConfig* config);

// Triton's ModelStatistics of a servable (one version).
void ToModelStatistics(const core::Servable& servable, inference::ModelStatistics* stats);

// Triton's RepositoryIndex: every served model version READY, or
// UNAVAILABLE with a reason when the server is not ready (with `only_ready`
// and not ready, none); then, unless `only_ready`, the model repository's
// versions that are not served, in the state and with the reason the
// repository gives (LOADING, UNAVAILABLE, UNLOADING).
void ToRepositoryIndex(const std::vector<std::shared_ptr<const core::Servable>>& servables,
                       const std::vector<core::ModelVersionState>& repository, bool ready,
                       bool warm, bool only_ready, inference::RepositoryIndexResponse* response);

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_KSERVE_CONVERSION_H_
