// Client for the standard gRPC health service (grpc.health.v1.Health/Check).
// Debian ships no generated C++ stubs of health.proto for clients, and the
// two messages are one field each, so they are encoded by hand and sent
// through grpc::GenericStub.
#ifndef GHOSTSERVE_CLIENT_HEALTH_H_
#define GHOSTSERVE_CLIENT_HEALTH_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ghostserve::client {

// HealthCheckResponse.ServingStatus.
enum class ServingStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3,
};

// "UNKNOWN", "SERVING", "NOT_SERVING" or "SERVICE_UNKNOWN"; the name of the
// nearest case for values a newer server might send.
std::string ServingStatusName(ServingStatus status);

// Serialised HealthCheckRequest{service = service}.
std::string EncodeHealthCheckRequest(const std::string& service);

// Parses a serialised HealthCheckResponse. Unknown fields are skipped, as
// protobuf does; a missing status field means UNKNOWN (proto3 default).
// InvalidArgument when the bytes are not a well-formed message.
absl::StatusOr<ServingStatus> DecodeHealthCheckResponse(const std::string& bytes);

struct HealthCheckResult {
  // Not OK when the call failed (e.g. UNAVAILABLE when nothing listens);
  // `serving` is then meaningless.
  grpc::Status rpc_status;
  ServingStatus serving = ServingStatus::kUnknown;
};

// Calls Check on `channel` for `service` ("" = the server as a whole) and
// blocks until the server answers or `timeout_ms` passes.
HealthCheckResult CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& service, int64_t timeout_ms);

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_HEALTH_H_
