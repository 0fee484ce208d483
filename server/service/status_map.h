// The one place internal statuses become gRPC statuses.
#ifndef GHOSTSERVE_SERVER_SERVICE_STATUS_MAP_H_
#define GHOSTSERVE_SERVER_SERVICE_STATUS_MAP_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace ghostserve::service {

// bad image or argument -> INVALID_ARGUMENT; unknown model -> NOT_FOUND;
// queue full or draining -> UNAVAILABLE; too large -> RESOURCE_EXHAUSTED;
// deadline passed in the queue -> DEADLINE_EXCEEDED; cancelled -> CANCELLED;
// unauthenticated -> UNAUTHENTICATED; permission denied and failed
// precondition keep their codes; everything else (our own bugs, LibTorch
// failures) -> INTERNAL. The message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The HTTP status for a failed request, after the same mapping:
// INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
// NOT_FOUND 404, FAILED_PRECONDITION 412, RESOURCE_EXHAUSTED 429,
// CANCELLED 499 (nginx's "client closed request"), INTERNAL 500,
// UNAVAILABLE 503, DEADLINE_EXCEEDED 504. 200 for OK.
int ToHttpStatus(const absl::Status& status);

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_STATUS_MAP_H_
