// ghostserve.v1 messages <-> the core's requests and results. Pure functions:
// the handlers in classifier_service.cc only move data between gRPC and these.
#ifndef GHOSTSERVE_SERVER_SERVICE_CLASSIFY_CONVERSION_H_
#define GHOSTSERVE_SERVER_SERVICE_CLASSIFY_CONVERSION_H_

#include "absl/status/statusor.h"
#include "ghostserve/v1/classifier.pb.h"
#include "server/core/request.h"
#include "server/core/servable.h"

namespace ghostserve::service {

// The image is borrowed from `request`, which must outlive the core call.
// Checks only what the core does not know about (request_id); deadline and
// cancellation are the caller's to set.
absl::StatusOr<core::InferRequest> FromClassify(const v1::ClassifyRequest& request);

// `result` answers `request` (top_k predictions of its one image).
v1::ClassifyResponse ToClassify(const v1::ClassifyRequest& request,
                                const core::InferResult& result);

// One ListModels entry.
void ToModelInfo(const core::Servable& servable, bool ready, v1::ModelInfo* info);

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_CLASSIFY_CONVERSION_H_
