// The checks every request gets on arrival, whatever its front-end, each
// with one message per condition. Pure functions of the request and the
// servable.
#ifndef GHOSTSERVE_SERVER_CORE_REQUEST_CHECKS_H_
#define GHOSTSERVE_SERVER_CORE_REQUEST_CHECKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "server/core/core_options.h"
#include "server/core/request.h"
#include "server/core/servable.h"

namespace ghostserve::core {

// InvalidArgument or ResourceExhausted for the images (count, emptiness, size, tensor shape)
// and top_k.
absl::Status ValidateRequest(const InferRequest& request, const Servable& servable,
                             const CoreOptions& options);

// Bytes of input the request's message holds for the core (for the byte
// budget). Call after ValidateRequest.
int64_t InputBytes(const InferRequest& request);

// DeadlineExceeded when the request's deadline (if any) cannot be met at
// `now_us`: its own decoding on the preprocessing threads plus the batches
// of its model ahead of it and its own on the executors, predicted from
// the servable's learned costs. Other models' work is not counted.
absl::Status CheckDeadline(const InferRequest& request, const Servable& servable,
                           const CoreOptions& options, int64_t now_us);

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_REQUEST_CHECKS_H_
