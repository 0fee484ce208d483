#include "server/service/auth.h"

#include <iterator>
#include <utility>

#include "absl/strings/match.h"

namespace ghostserve::service {
namespace {

constexpr absl::string_view kScheme = "bearer ";

}  // namespace

bool ConstantTimeEquals(absl::string_view expected, absl::string_view got) {
  // Folds a length mismatch and every byte difference into one accumulator
  // and never exits early; the loop always runs over expected.size() bytes.
  volatile unsigned char diff = expected.size() == got.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < got.size() ? static_cast<unsigned char>(got[i]) : 0;
    diff = static_cast<unsigned char>(diff | (static_cast<unsigned char>(expected[i]) ^ g));
  }
  return diff == 0;
}

BearerAuth::BearerAuth(std::string token, metrics::ServerMetrics* metrics)
    : token_(std::move(token)), metrics_(metrics) {}

bool BearerAuth::Accepts(const absl::string_view* values, size_t count,
                         metrics::Protocol protocol) const {
  if (token_.empty()) return true;
  bool ok = false;
  // Exactly one authorization entry: with several, which one a proxy in
  // front of us checked would be ambiguous.
  if (count == 1) {
    const absl::string_view value = values[0];
    // The scheme is case-insensitive (RFC 7235).
    if (value.size() > kScheme.size() &&
        absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
      ok = ConstantTimeEquals(token_, value.substr(kScheme.size()));
    }
  }
  // Client-sent model names are not read before authentication, so refusals
  // count under the bounded "unknown" label.
  if (!ok && metrics_ != nullptr) metrics_->CountRequest("", protocol, "UNAUTHENTICATED");
  return ok;
}

grpc::Status BearerAuth::Check(const grpc::CallbackServerContext& ctx) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto range = ctx.client_metadata().equal_range("authorization");
  absl::string_view values[2];
  size_t count = 0;
  for (auto it = range.first; it != range.second && count < 2; ++it) {
    values[count++] = absl::string_view(it->second.data(), it->second.size());
  }
  if (Accepts(values, count, metrics::Protocol::kGrpc)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, kUnauthenticatedMessage);
}

grpc::ServerUnaryReactor* BearerAuth::RefuseUnary(grpc::CallbackServerContext* ctx) const {
  grpc::Status status = Check(*ctx);
  if (status.ok()) return nullptr;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

}  // namespace ghostserve::service
