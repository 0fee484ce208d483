// gRPC plumbing shared by ghostserve-client's subcommands: the connection
// flags (server, TLS, bearer token), channel setup, deadlines, and (from
// proto/) status code names.
#ifndef GHOSTSERVE_CLIENT_RPC_H_
#define GHOSTSERVE_CLIENT_RPC_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/status_code_name.h"

namespace CLI {
class App;
}  // namespace CLI

namespace ghostserve::client {

constexpr char kDefaultServer[] = "localhost:50051";
constexpr int64_t kDefaultTimeoutMs = 30000;
// Responses with many top-k labels can exceed gRPC's 4 MiB default.
constexpr int kMaxReceiveMessageBytes = 64 << 20;

// How to reach the server; every subcommand takes these as flags
// (AddConnectionFlags). File flags name PEM files or the token file.
struct ConnectionOptions {
  // "host:port" or any gRPC target URI.
  std::string server = kDefaultServer;
  // CA certificates that signed the server's certificate; setting it turns
  // TLS on.
  std::string tls_ca;
  // Client certificate and key for mutual TLS (both or neither; need tls_ca).
  std::string tls_cert;
  std::string tls_key;
  // Name to check the server's certificate against instead of the host in
  // `server` (e.g. when connecting by IP address or through a tunnel).
  std::string tls_server_name;
  // File holding the bearer token (trailing whitespace stripped), sent as
  // "authorization: Bearer <token>" on every call.
  std::string auth_token_file;
};

// Declares --server, --tls-ca, --tls-cert, --tls-key, --tls-server-name and
// --auth-token-file on `app`. `options` must outlive app.parse.
void AddConnectionFlags(CLI::App& app, ConnectionOptions* options);

// Credentials read from the files a ConnectionOptions names. Copyable and
// immutable: make one per process, then as many channels as needed.
class Connection {
 public:
  // Reads and checks the files. InvalidArgument names the offending flag
  // (never a file's contents).
  static absl::StatusOr<Connection> Create(const ConnectionOptions& options);

  // A channel to the server with these credentials; when a token is set,
  // every call on it carries the authorization header (added by a client
  // interceptor, so call sites need nothing). Channels built with different
  // `index` values never share a TCP connection, so a load generator can
  // spread its calls over several HTTP/2 connections instead of queueing
  // behind one connection's stream limit. Does not block.
  std::shared_ptr<grpc::Channel> MakeChannel(int index = 0) const;

  const std::string& server() const { return server_; }
  bool tls() const { return tls_; }
  // "Bearer <token>" from --auth-token-file, or "" for none: the value of
  // the authorization header (gRPC metadata or HTTP) on every call.
  const std::string& authorization() const { return authorization_; }
  // With TLS: the PEM contents of --tls-ca, --tls-cert and --tls-key (the
  // last two empty without mutual TLS) and --tls-server-name, for clients
  // that are not gRPC (bench --http).
  const std::string& tls_ca_pem() const { return tls_ca_pem_; }
  const std::string& tls_cert_pem() const { return tls_cert_pem_; }
  const std::string& tls_key_pem() const { return tls_key_pem_; }
  const std::string& tls_server_name() const { return server_name_; }

 private:
  std::string server_;
  bool tls_ = false;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string server_name_;
  std::string tls_ca_pem_;
  std::string tls_cert_pem_;
  std::string tls_key_pem_;
  std::string authorization_;  // "Bearer <token>", or "" for none
};

// Sets the deadline of the call `context` is for to `timeout_ms` from now.
void SetTimeout(grpc::ClientContext& context, int64_t timeout_ms);

using ::ghostserve::StatusCodeName;

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_RPC_H_
