// Names of gRPC status codes, shared by the server (metrics labels) and the
// client (error reports).
#ifndef GHOSTSERVE_PROTO_STATUS_CODE_NAME_H_
#define GHOSTSERVE_PROTO_STATUS_CODE_NAME_H_

#include <grpcpp/support/status.h>

#include <string>

namespace ghostserve {

// "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for a value outside the canonical
// set, so the result is always one of 17 names (safe as a metrics label).
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace ghostserve

#endif  // GHOSTSERVE_PROTO_STATUS_CODE_NAME_H_
