// gRPC plumbing shared by ghostserve-client's subcommands: channel setup,
// deadlines, and (from proto/) status code names.
#ifndef GHOSTSERVE_CLIENT_RPC_H_
#define GHOSTSERVE_CLIENT_RPC_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "proto/status_code_name.h"

namespace ghostserve::client {

constexpr char kDefaultServer[] = "localhost:50051";
constexpr int64_t kDefaultTimeoutMs = 30000;
// Responses with many top-k labels can exceed gRPC's 4 MiB default.
constexpr int kMaxReceiveMessageBytes = 64 << 20;

// An insecure channel to `server` ("host:port" or any gRPC target URI).
// Channels built with different `index` values never share a TCP connection,
// so a load generator can spread its calls over several HTTP/2 connections
// instead of queueing behind one connection's stream limit. Does not block.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& server, int index = 0);

// Sets the deadline of the call `context` is for to `timeout_ms` from now.
void SetTimeout(grpc::ClientContext& context, int64_t timeout_ms);

using ::ghostserve::StatusCodeName;

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_RPC_H_
