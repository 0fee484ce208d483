// KServe v2 REST bodies <-> the gRPC messages (inference.ModelInferRequest
// and friends), so REST requests take exactly the gRPC path
// (kserve_conversion.h) from there on. Pure functions.
//
// An infer body is JSON, or with the binary tensor data extension (Triton's
// "binary_tensor_data"), JSON of Inference-Header-Content-Length bytes
// followed by the binary inputs, in input order, each the size its
// "binary_data_size" parameter says. BYTES elements are encoded images: in
// JSON, a base64 string or {"b64": "<base64>"}; in binary, each a 4-byte
// little-endian length followed by the bytes.
#ifndef GHOSTSERVE_SERVER_SERVICE_KSERVE_REST_H_
#define GHOSTSERVE_SERVER_SERVICE_KSERVE_REST_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kserve/grpc_predict_v2.pb.h"

namespace ghostserve::service {

struct RestInferRequest {
  inference::ModelInferRequest proto;
  // Per requested output (in proto.outputs() order): send it as binary data.
  std::vector<bool> binary_outputs;
  // "binary_data_output": true in the request's parameters: every output
  // (also those not named) is binary.
  bool all_binary = false;
};

// `model` and `version` come from the URL (version may be empty).
// `header_length` is Inference-Header-Content-Length, if sent.
// InvalidArgument naming what is wrong for anything malformed.
absl::StatusOr<RestInferRequest> ParseRestInfer(std::string_view model, std::string_view version,
                                                std::string_view body,
                                                std::optional<size_t> header_length);

struct RestBody {
  std::string body;
  // Set when the body carries binary outputs: the JSON part's length, for
  // the Inference-Header-Content-Length response header.
  std::optional<size_t> json_length;
};

// The response for `response` (raw_output_contents as ToKServe fills them).
RestBody ToRestInfer(const RestInferRequest& request,
                     const inference::ModelInferResponse& response);

// GET /v2/models/{m}: the metadata as KServe's REST JSON.
std::string ToRestMetadata(const inference::ModelMetadataResponse& metadata);

// Triton's REST forms of its extensions: the model config as Triton prints it
// (field names as in model_config.proto, enums by name, integers as
// numbers), {"model_stats": [...]} with numbers, and the repository index
// as an array of {name, version, state, reason}.
std::string ToRestConfig(const inference::ModelConfig& config);
std::string ToRestStatistics(const inference::ModelStatisticsResponse& stats);
std::string ToRestRepositoryIndex(const inference::RepositoryIndexResponse& index);

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_KSERVE_REST_H_
