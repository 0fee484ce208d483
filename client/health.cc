#include "client/health.h"

#include <memory>

#include "client/rpc.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace ghostserve::client {

std::string ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case ServingStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

HealthCheckResult CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& service, int64_t timeout_ms) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetTimeout(context, timeout_ms);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;

  HealthCheckResult result;
  result.rpc_status = stub->Check(&context, request, &response);
  if (!result.rpc_status.ok()) return result;
  // Enum values this client does not know read as UNKNOWN (proto3 keeps
  // them as numbers).
  const int status = static_cast<int>(response.status());
  result.serving = status >= 0 && status <= static_cast<int>(ServingStatus::kServiceUnknown)
                       ? static_cast<ServingStatus>(status)
                       : ServingStatus::kUnknown;
  return result;
}

}  // namespace ghostserve::client
