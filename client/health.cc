#include "client/health.h"

#include <grpcpp/generic/generic_stub.h>

#include <future>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/rpc.h"

namespace ghostserve::client {
namespace {

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";

// Protobuf wire types.
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

void AppendVarint(uint64_t v, std::string& out) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// Reads a varint at `pos`, advancing it; false on truncation or overflow.
bool ReadVarint(const std::string& in, size_t& pos, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= in.size()) return false;
    const auto byte = static_cast<uint8_t>(in[pos++]);
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

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

std::string EncodeHealthCheckRequest(const std::string& service) {
  std::string out;
  // proto3 leaves a field at its default value off the wire.
  if (service.empty()) return out;
  AppendVarint((1 << 3) | kLengthDelimited, out);
  AppendVarint(service.size(), out);
  out += service;
  return out;
}

absl::StatusOr<ServingStatus> DecodeHealthCheckResponse(const std::string& bytes) {
  const auto malformed = [] { return absl::InvalidArgumentError("malformed HealthCheckResponse"); };
  uint64_t status = 0;
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t key;
    if (!ReadVarint(bytes, pos, key)) return malformed();
    const uint64_t field = key >> 3;
    const int wire_type = static_cast<int>(key & 7);
    if (field == 0) return malformed();
    uint64_t v;
    switch (wire_type) {
      case kVarint:
        if (!ReadVarint(bytes, pos, v)) return malformed();
        // The last occurrence of a scalar field wins.
        if (field == 1) status = v;
        break;
      case kFixed64:
        if (bytes.size() - pos < 8) return malformed();
        pos += 8;
        break;
      case kLengthDelimited:
        if (!ReadVarint(bytes, pos, v) || bytes.size() - pos < v) {
          return malformed();
        }
        pos += v;
        break;
      case kFixed32:
        if (bytes.size() - pos < 4) return malformed();
        pos += 4;
        break;
      default:
        return malformed();
    }
  }
  // Enum values this client does not know read as UNKNOWN, as proto3 would
  // print them.
  if (status > static_cast<uint64_t>(ServingStatus::kServiceUnknown)) {
    return ServingStatus::kUnknown;
  }
  return static_cast<ServingStatus>(status);
}

HealthCheckResult CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& service, int64_t timeout_ms) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetTimeout(context, timeout_ms);

  const std::string request_bytes = EncodeHealthCheckRequest(service);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, kCheckMethod, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(status); });

  HealthCheckResult result;
  result.rpc_status = done.get_future().get();
  if (!result.rpc_status.ok()) return result;

  std::vector<grpc::Slice> slices;
  if (grpc::Status dumped = response.Dump(&slices); !dumped.ok()) {
    result.rpc_status = dumped;
    return result;
  }
  std::string response_bytes;
  for (const grpc::Slice& s : slices) {
    response_bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  absl::StatusOr<ServingStatus> serving = DecodeHealthCheckResponse(response_bytes);
  if (!serving.ok()) {
    result.rpc_status =
        grpc::Status(grpc::StatusCode::INTERNAL, std::string(serving.status().message()));
    return result;
  }
  result.serving = *serving;
  return result;
}

}  // namespace ghostserve::client
