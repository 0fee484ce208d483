// Bearer-token authentication of ghostserve's own RPCs (ghostserve.v1.Classifier
// and inference.GRPCInferenceService). grpc.health.v1 and reflection are not
// checked: Kubernetes' gRPC probes cannot send metadata, and reflection only
// describes the public API.
#ifndef GHOSTSERVE_SERVER_SERVICE_AUTH_H_
#define GHOSTSERVE_SERVER_SERVICE_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/strings/string_view.h"
#include "server/metrics/metrics.h"

namespace ghostserve::service {

// The message of every refusal. It never echoes the token or what was sent.
constexpr char kUnauthenticatedMessage[] =
    "missing or invalid credentials: send metadata 'authorization: Bearer <token>'";
constexpr char kUnauthenticatedHttpMessage[] =
    "missing or invalid credentials: send the header 'Authorization: Bearer <token>'";

// True when `got` equals `expected`. The time taken depends only on
// expected.size(), never on where the two differ or on got's contents.
bool ConstantTimeEquals(absl::string_view expected, absl::string_view got);

// Checks that a call carries exactly one "authorization: Bearer <token>"
// metadata entry with the configured token. An empty token disables the
// check (every call passes). Thread-safe; `metrics` (may be null) is
// borrowed and must outlive this object.
class BearerAuth {
 public:
  BearerAuth(std::string token, metrics::ServerMetrics* metrics);

  bool enabled() const { return !token_.empty(); }

  // The check itself, for any protocol: `values` are the request's
  // authorization header values (`count` of them; 2 stands for "two or
  // more"). A refusal is counted under `protocol`.
  bool Accepts(const absl::string_view* values, size_t count, metrics::Protocol protocol) const;

  // OK, or UNAUTHENTICATED with kUnauthenticatedMessage (counted in
  // ghostserve_requests_total{model="unknown",code="UNAUTHENTICATED"}).
  grpc::Status Check(const grpc::CallbackServerContext& ctx) const;

  // For unary handlers: nullptr when the call may proceed, otherwise the
  // call's default reactor, already finished with UNAUTHENTICATED, for the
  // handler to return.
  grpc::ServerUnaryReactor* RefuseUnary(grpc::CallbackServerContext* ctx) const;

 private:
  const std::string token_;
  metrics::ServerMetrics* const metrics_;
};

// BearerAuth::RefuseUnary for an optional `auth`: null admits every call.
inline grpc::ServerUnaryReactor* RefuseUnauthenticated(const BearerAuth* auth,
                                                       grpc::CallbackServerContext* ctx) {
  return auth == nullptr ? nullptr : auth->RefuseUnary(ctx);
}

// A bidirectional-stream reactor that ends the call with `status` at once
// and deletes itself when gRPC is done with it.
template <typename Request, typename Response>
class RefusedBidiReactor : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit RefusedBidiReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_AUTH_H_
