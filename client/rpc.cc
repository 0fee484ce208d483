#include "client/rpc.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ghostserve::client {
namespace {

absl::StatusOr<std::string> ReadFlagFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad())
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": read error"));
  return bytes.str();
}

// Adds "authorization: Bearer <token>" to the initial metadata of every call
// on the channel it is installed on.
class AuthorizationInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit AuthorizationInterceptor(const std::string& value) : value_(value) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", value_);
    }
    methods->Proceed();
  }

 private:
  const std::string& value_;  // owned by the factory, which outlives the call
};

class AuthorizationInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit AuthorizationInterceptorFactory(std::string value) : value_(std::move(value)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new AuthorizationInterceptor(value_);
  }

 private:
  const std::string value_;
};

}  // namespace

void AddConnectionFlags(CLI::App& app, ConnectionOptions* options) {
  app.add_option("--server", options->server, "server address")->type_name("ADDR");
  app.add_option("--tls-ca", options->tls_ca, "PEM CA certificates of the server; turns TLS on")
      ->type_name("FILE");
  app.add_option("--tls-cert", options->tls_cert,
                 "PEM client certificate for mutual TLS (with --tls-key)")
      ->type_name("FILE");
  app.add_option("--tls-key", options->tls_key, "PEM private key of --tls-cert")->type_name("FILE");
  app.add_option("--tls-server-name", options->tls_server_name,
                 "name to verify the server certificate against instead of\nthe host in --server")
      ->type_name("NAME");
  app.add_option("--auth-token-file", options->auth_token_file,
                 "send 'authorization: Bearer <file contents>' on every call")
      ->type_name("FILE");
}

absl::StatusOr<Connection> Connection::Create(const ConnectionOptions& options) {
  if (options.server.empty()) return absl::InvalidArgumentError("--server is empty");
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together (give both or neither)");
  }
  if (options.tls_ca.empty() && !options.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls-cert needs --tls-ca (mutual TLS is TLS)");
  }
  if (options.tls_ca.empty() && !options.tls_server_name.empty()) {
    return absl::InvalidArgumentError("--tls-server-name needs --tls-ca");
  }
  Connection c;
  c.server_ = options.server;
  if (options.tls_ca.empty()) {
    c.credentials_ = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadFlagFile("tls-ca", options.tls_ca);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    c.tls_ca_pem_ = std::move(*ca);
    if (!options.tls_cert.empty()) {
      auto cert = ReadFlagFile("tls-cert", options.tls_cert);
      if (!cert.ok()) return cert.status();
      auto key = ReadFlagFile("tls-key", options.tls_key);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
      c.tls_cert_pem_ = std::move(*cert);
      c.tls_key_pem_ = std::move(*key);
    }
    c.credentials_ = grpc::SslCredentials(ssl);
    c.tls_ = true;
    c.server_name_ = options.tls_server_name;
  }
  if (!options.auth_token_file.empty()) {
    auto token = ReadFlagFile("auth-token-file", options.auth_token_file);
    if (!token.ok()) return token.status();
    const absl::string_view t = absl::StripTrailingAsciiWhitespace(*token);
    if (t.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-token-file ", options.auth_token_file, ": the token is empty"));
    }
    c.authorization_ = absl::StrCat("Bearer ", t);
  }
  return c;
}

std::shared_ptr<grpc::Channel> Connection::MakeChannel(int index) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  // gRPC shares subchannels (connections) between channels whose arguments
  // are equal; a private pool plus a distinguishing argument rules that out.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("ghostserve.client_channel_index", index);
  if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
  if (authorization_.empty()) return grpc::CreateCustomChannel(server_, credentials_, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<AuthorizationInterceptorFactory>(authorization_));
  return grpc::experimental::CreateCustomChannelWithInterceptors(server_, credentials_, args,
                                                                 std::move(interceptors));
}

void SetTimeout(grpc::ClientContext& context, int64_t timeout_ms) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

}  // namespace ghostserve::client
