#include "client/rpc.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace ghostserve::client {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& server, int index) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  // gRPC shares subchannels (connections) between channels whose arguments
  // are equal; a private pool plus a distinguishing argument rules that out.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("ghostserve.client_channel_index", index);
  return grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
}

void SetTimeout(grpc::ClientContext& context, int64_t timeout_ms) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

}  // namespace ghostserve::client
