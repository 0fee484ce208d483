// Client for the standard gRPC health service (grpc.health.v1.Health/Check),
// through the stub generated from proto/grpc/health/v1/health.proto.
#ifndef GHOSTSERVE_CLIENT_HEALTH_H_
#define GHOSTSERVE_CLIENT_HEALTH_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

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
