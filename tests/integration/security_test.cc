// Transport security and gRPC limits, end to end: a real GhostServer on
// loopback port 0 with one small untrained GhostNet, talked to over real
// gRPC. Certificates (a CA, a server certificate for localhost/127.0.0.1, a
// client certificate, and a second CA with its own client certificate) are
// generated with the openssl CLI into a temporary directory when the test
// binary starts, and removed when it ends; no key is committed.
#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/health.h"
#include "client/rpc.h"
#include "ghostserve/v1/classifier.grpc.pb.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "model/loaded_model.h"
#include "server/batcher/clock.h"
#include "server/core/torch_model.h"
#include "server/metrics/metrics.h"
#include "server/service/auth.h"
#include "server/service/server.h"

#ifndef GHOSTSERVE_TESTDATA
#error "GHOSTSERVE_TESTDATA must name the test image directory"
#endif

namespace ghostserve {
namespace {

constexpr char kModel[] = "tiny_10";
constexpr char kToken[] = "s3cr3t-T0ken_for.tests~42";
constexpr int64_t kCallTimeoutMs = 20'000;
// Calls expected to fail at the transport fail fast; this only bounds a hang.
constexpr int64_t kFailTimeoutMs = 5'000;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

// ------------------------------------------------------------ certificates

constexpr char kGenerateCerts[] = R"(set -e
cd "$1"
mkca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1"
}
issue() {  # NAME CA EXTENSIONS
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -out "$1.pem" -days 2 -extfile "$1.ext"
}
mkca ca
mkca other-ca
issue server ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client ca "extendedKeyUsage=clientAuth"
issue other-client other-ca "extendedKeyUsage=clientAuth"
)";

// The generated files, shared by every test of the binary.
class Certs : public ::testing::Environment {
 public:
  static Certs* Get() { return instance_; }
  static void Register() { instance_ = new Certs(); }

  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/ghostserve_certs_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = dir;
    WriteFile(dir_ + "/gen.sh", kGenerateCerts);
    const std::string cmd = "sh " + dir_ + "/gen.sh " + dir_ + " >" + dir_ + "/gen.log 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadFile(dir_ + "/gen.log");
    WriteFile(Path("token"), std::string(kToken) + "\n");
  }
  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  // "ca.pem", "server.key", "client.pem", "other-ca.pem", ...
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Pem(const std::string& name) const { return ReadFile(Path(name)); }

 private:
  static Certs* instance_;
  std::string dir_;
};
Certs* Certs::instance_ = nullptr;

[[maybe_unused]] const bool kCertsRegistered = [] {
  Certs::Register();
  ::testing::AddGlobalTestEnvironment(Certs::Get());
  return true;
}();

// ------------------------------------------------------------ server

std::vector<core::ModelSpec> TestModels() {
  core::ModelSpec tiny;
  tiny.name = kModel;
  tiny.load.net = *model::BuiltinModelOptions("ghostnet_050");
  tiny.load.net.num_classes = 10;
  tiny.load.seed = 4;
  tiny.preprocess = preprocess::PreprocessConfig::ImageNet();
  for (int i = 0; i < 10; ++i) tiny.labels.push_back("c" + std::to_string(i));
  return {tiny};
}

void SetTimeout(grpc::ClientContext& ctx, int64_t ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// Metadata to send; an empty map sends none.
using Metadata = std::multimap<std::string, std::string>;

Metadata Bearer(const std::string& token) { return {{"authorization", "Bearer " + token}}; }

class SecurityTest : public ::testing::Test {
 protected:
  // Starts a server with `so` (listen and metrics addresses are filled in).
  void StartServer(service::ServerOptions so) {
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ =
        std::make_unique<metrics::ServerMetrics>(registry_.get(), std::vector<std::string>{kModel});
    core::CoreOptions co;
    co.preprocess_threads = 1;
    co.warm_every_batch_size = false;  // many servers start here; plans build on demand
    auto core =
        core::CreateInferenceCore(co, TestModels(), batcher::RealClock::Get(), metrics_.get());
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    so.listen = "127.0.0.1:0";
    so.metrics_listen = "";
    auto server = service::GhostServer::Create(so, core_.get(), registry_, metrics_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(core_->Warmup().ok());
    server_->SetServing(true);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(5'000);
    server_.reset();
    core_.reset();
  }

  std::string Target(const std::string& host = "127.0.0.1") const {
    return host + ":" + std::to_string(server_->port());
  }

  std::shared_ptr<grpc::Channel> Channel(std::shared_ptr<grpc::ChannelCredentials> creds,
                                         grpc::ChannelArguments args = {}) {
    // A private subchannel pool: no test reuses another channel's connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(Target(), std::move(creds), args);
  }

  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca,
                                                       const std::string& client = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Certs::Get()->Pem(ca + ".pem");
    if (!client.empty()) {
      o.pem_cert_chain = Certs::Get()->Pem(client + ".pem");
      o.pem_private_key = Certs::Get()->Pem(client + ".key");
    }
    return grpc::SslCredentials(o);
  }

  static service::ServerOptions TlsOptions(bool mutual) {
    service::ServerOptions so;
    so.tls_cert_pem = Certs::Get()->Pem("server.pem");
    so.tls_key_pem = Certs::Get()->Pem("server.key");
    if (mutual) so.tls_client_ca_pem = Certs::Get()->Pem("ca.pem");
    return so;
  }

  static v1::ClassifyRequest Request() {
    v1::ClassifyRequest r;
    r.set_model(kModel);
    r.set_image(ReadFile(std::string(GHOSTSERVE_TESTDATA) + "/chelsea.jpg"));
    r.set_top_k(3);
    return r;
  }

  static grpc::Status Classify(const std::shared_ptr<grpc::Channel>& channel,
                               const Metadata& md = {}, int64_t timeout_ms = kCallTimeoutMs,
                               v1::ClassifyResponse* out = nullptr) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, timeout_ms);
    for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
    v1::ClassifyResponse response;
    const grpc::Status s = v1::Classifier::NewStub(channel)->Classify(&ctx, Request(), &response);
    if (s.ok()) {
      EXPECT_EQ(response.predictions_size(), 3);
    }
    if (out != nullptr) *out = response;
    return s;
  }

  static grpc::Status ModelInfer(const std::shared_ptr<grpc::Channel>& channel,
                                 const Metadata& md = {}) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, kCallTimeoutMs);
    for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
    inference::ModelInferRequest req;
    req.set_model_name(kModel);
    auto* in = req.add_inputs();
    in->set_name("images");
    in->set_datatype("BYTES");
    in->add_shape(1);
    in->mutable_contents()->add_bytes_contents(Request().image());
    inference::ModelInferResponse response;
    const grpc::Status s =
        inference::GRPCInferenceService::NewStub(channel)->ModelInfer(&ctx, req, &response);
    if (s.ok()) {
      EXPECT_EQ(response.outputs_size(), 2);
    }
    return s;
  }

  // ghostserve_requests_total{model=..., code=...}, 0 if absent.
  double RequestsTotal(const std::string& model, const std::string& code) const {
    for (const auto& family : registry_->Collect()) {
      if (family.name != "ghostserve_requests_total") continue;
      for (const auto& m : family.metric) {
        std::map<std::string, std::string> labels;
        for (const auto& l : m.label) labels[l.name] = l.value;
        if (labels["model"] == model && labels["code"] == code) return m.counter.value;
      }
    }
    return 0;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<core::InferenceCore> core_;
  std::unique_ptr<service::GhostServer> server_;
};

// ------------------------------------------------------------ TLS

class TlsTest : public SecurityTest {
 protected:
  void SetUp() override { StartServer(TlsOptions(/*mutual=*/false)); }
};

TEST_F(TlsTest, PlaintextClientIsRefused) {
  auto channel = Channel(grpc::InsecureChannelCredentials());
  EXPECT_EQ(Classify(channel, {}, kFailTimeoutMs).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The health service is on the same TLS port: plaintext cannot reach it either.
  EXPECT_EQ(client::CheckHealth(channel, "", kFailTimeoutMs).rpc_status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ServesClientsTrustingItsCa) {
  auto channel = Channel(Tls("ca"));
  const grpc::Status s = Classify(channel);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_TRUE(ModelInfer(channel).ok());
  EXPECT_EQ(client::CheckHealth(channel, "", kCallTimeoutMs).serving,
            client::ServingStatus::kServing);
  // The certificate names localhost too.
  auto by_name = grpc::CreateChannel(Target("localhost"), Tls("ca"));
  EXPECT_TRUE(Classify(by_name).ok());
}

TEST_F(TlsTest, ClientTrustingAnotherCaIsRefused) {
  EXPECT_EQ(Classify(Channel(Tls("other-ca")), {}, kFailTimeoutMs).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // And the server keeps serving the right clients.
  EXPECT_TRUE(Classify(Channel(Tls("ca"))).ok());
}

TEST_F(TlsTest, ClientLibraryConnectsWithItsFlagsAndChecksTheServerName) {
  client::ConnectionOptions o;
  o.server = Target();
  o.tls_ca = Certs::Get()->Path("ca.pem");
  auto conn = client::Connection::Create(o);
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_TRUE(conn->tls());
  EXPECT_TRUE(Classify(conn->MakeChannel()).ok());

  // --tls-server-name replaces the name checked against the certificate.
  o.tls_server_name = "localhost";
  auto named = client::Connection::Create(o);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_TRUE(Classify(named->MakeChannel()).ok());
  o.tls_server_name = "not-this-server.example";
  auto wrong = client::Connection::Create(o);
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ(Classify(wrong->MakeChannel(), {}, kFailTimeoutMs).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(ClientConnectionTest, FlagErrorsNameTheFlag) {
  client::ConnectionOptions o;
  o.tls_cert = Certs::Get()->Path("client.pem");
  o.tls_key = Certs::Get()->Path("client.key");
  EXPECT_NE(client::Connection::Create(o).status().message().find("--tls-ca"), std::string::npos);
  o = {};
  o.tls_ca = Certs::Get()->Path("ca.pem");
  o.tls_cert = Certs::Get()->Path("client.pem");
  EXPECT_NE(client::Connection::Create(o).status().message().find("--tls-key"), std::string::npos);
  o = {};
  o.tls_server_name = "localhost";
  EXPECT_NE(client::Connection::Create(o).status().message().find("--tls-server-name"),
            std::string::npos);
  o = {};
  o.tls_ca = Certs::Get()->Path("missing.pem");
  EXPECT_NE(client::Connection::Create(o).status().message().find("--tls-ca"), std::string::npos);
  o = {};
  const std::string empty = Certs::Get()->Path("empty-token");
  WriteFile(empty, " \n\n");
  o.auth_token_file = empty;
  const absl::Status s = client::Connection::Create(o).status();
  EXPECT_NE(s.message().find("--auth-token-file"), std::string::npos) << s;
  EXPECT_NE(s.message().find("empty"), std::string::npos) << s;
}

// ------------------------------------------------------------ mutual TLS

class MutualTlsTest : public SecurityTest {
 protected:
  void SetUp() override { StartServer(TlsOptions(/*mutual=*/true)); }
};

TEST_F(MutualTlsTest, ClientWithoutCertificateIsRefused) {
  EXPECT_EQ(Classify(Channel(Tls("ca")), {}, kFailTimeoutMs).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Health is behind the same handshake.
  EXPECT_NE(client::CheckHealth(Channel(Tls("ca")), "", kFailTimeoutMs).serving,
            client::ServingStatus::kServing);
}

TEST_F(MutualTlsTest, ClientCertificateFromAnotherCaIsRefused) {
  EXPECT_EQ(Classify(Channel(Tls("ca", "other-client")), {}, kFailTimeoutMs).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MutualTlsTest, ClientCertificateFromTheClientCaIsServed) {
  // First a refused client, then the right one: the server keeps serving.
  EXPECT_FALSE(Classify(Channel(Tls("ca")), {}, kFailTimeoutMs).ok());
  auto channel = Channel(Tls("ca", "client"));
  const grpc::Status s = Classify(channel);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_TRUE(ModelInfer(channel).ok());
  EXPECT_EQ(client::CheckHealth(channel, "", kCallTimeoutMs).serving,
            client::ServingStatus::kServing);

  // The same through ghostserve-client's connection flags.
  client::ConnectionOptions o;
  o.server = Target();
  o.tls_ca = Certs::Get()->Path("ca.pem");
  o.tls_cert = Certs::Get()->Path("client.pem");
  o.tls_key = Certs::Get()->Path("client.key");
  auto conn = client::Connection::Create(o);
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_TRUE(Classify(conn->MakeChannel()).ok());
}

// ------------------------------------------------------------ bearer token

TEST(ConstantTimeEqualsTest, ComparesWholeStrings) {
  using service::ConstantTimeEquals;
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  // A prefix padded with NULs is not the token.
  EXPECT_FALSE(ConstantTimeEquals(std::string("ab\0", 3), "ab"));
}

class AuthTest : public SecurityTest {
 protected:
  void SetUp() override {
    service::ServerOptions so;
    so.auth_token = kToken;
    StartServer(so);
    channel_ = Channel(grpc::InsecureChannelCredentials());
  }

  // What clients may send that is not the token.
  static std::vector<std::pair<std::string, Metadata>> WrongCredentials() {
    const std::string token = kToken;
    std::string flipped = token;
    flipped.back() = flipped.back() == 'x' ? 'y' : 'x';
    return {
        {"no metadata", {}},
        {"same length, last byte differs", Bearer(flipped)},
        {"token plus a byte", Bearer(token + "2")},
        {"token minus its last byte", Bearer(token.substr(0, token.size() - 1))},
        {"empty token", {{"authorization", "Bearer "}}},
        {"no scheme", {{"authorization", token}}},
        {"Basic scheme", {{"authorization", "Basic " + token}}},
        {"two authorization entries",
         {{"authorization", "Bearer " + token}, {"authorization", "Bearer wrong"}}},
    };
  }

  static void ExpectUnauthenticated(const grpc::Status& s, const std::string& what,
                                    const Metadata& sent) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << what;
    EXPECT_EQ(s.error_message().find(kToken), std::string::npos) << what;
    for (const auto& [k, v] : sent) {
      const std::string value = v.substr(v.find(' ') + 1);
      if (value.size() >= 4) {
        EXPECT_EQ(s.error_message().find(value), std::string::npos) << what;
      }
    }
    EXPECT_EQ(s.error_message(), service::kUnauthenticatedMessage) << what;
  }

  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthTest, ClassifyNeedsTheRightToken) {
  int refused = 0;
  for (const auto& [what, md] : WrongCredentials()) {
    ExpectUnauthenticated(Classify(channel_, md), what, md);
    ++refused;
  }
  v1::ClassifyResponse r;
  const grpc::Status ok = Classify(channel_, Bearer(kToken), kCallTimeoutMs, &r);
  ASSERT_TRUE(ok.ok()) << ok.error_code() << " " << ok.error_message();
  EXPECT_EQ(r.model(), kModel);
  // The scheme is case-insensitive (RFC 7235).
  EXPECT_TRUE(Classify(channel_, {{"authorization", std::string("bearer ") + kToken}}).ok());
  // Refusals are counted without reading the request's model name.
  EXPECT_EQ(RequestsTotal("unknown", "UNAUTHENTICATED"), refused);
  EXPECT_EQ(RequestsTotal(kModel, "OK"), 2);
}

TEST_F(AuthTest, KServeModelInferNeedsTheRightToken) {
  for (const auto& [what, md] : WrongCredentials()) {
    ExpectUnauthenticated(ModelInfer(channel_, md), what, md);
  }
  const grpc::Status ok = ModelInfer(channel_, Bearer(kToken));
  EXPECT_TRUE(ok.ok()) << ok.error_code() << " " << ok.error_message();
}

// Every method of both services, found from their descriptors, so a method
// added later without the check fails here.
TEST_F(AuthTest, EveryClassifierAndKServeMethodNeedsTheToken) {
  grpc::GenericStub stub(channel_);
  int unary = 0;
  for (const char* name : {"ghostserve.v1.Classifier", "inference.GRPCInferenceService"}) {
    const auto* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const auto* m = service->method(i);
      if (m->client_streaming() || m->server_streaming()) continue;
      const std::string path = "/" + service->full_name() + "/" + m->name();
      for (const bool with_token : {false, true}) {
        grpc::ClientContext ctx;
        SetTimeout(ctx, kCallTimeoutMs);
        if (with_token) ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
        // An empty message: every field at its default.
        const std::string empty;
        grpc::Slice slice(empty);
        grpc::ByteBuffer request(&slice, 1);
        grpc::ByteBuffer response;
        std::promise<grpc::Status> done;
        stub.UnaryCall(&ctx, path, grpc::StubOptions(), &request, &response,
                       [&done](grpc::Status s) { done.set_value(std::move(s)); });
        const grpc::Status s = done.get_future().get();
        if (with_token) {
          EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << path;
        } else {
          EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << path;
        }
      }
      ++unary;
    }
  }
  // Classify, ListModels + eleven KServe methods (five Triton extensions).
  EXPECT_EQ(unary, 13);

  // The streaming methods: Triton's ModelStreamInfer...
  for (const bool with_token : {false, true}) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, kCallTimeoutMs);
    if (with_token) ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    auto stub = inference::GRPCInferenceService::NewStub(channel_);
    auto stream = stub->ModelStreamInfer(&ctx);
    stream->WritesDone();
    inference::ModelStreamInferResponse r;
    while (stream->Read(&r)) {
    }
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(),
              with_token ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED);
  }
  // ...and ClassifyStream.
  for (const bool with_token : {false, true}) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, kCallTimeoutMs);
    if (with_token) ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    auto stub = v1::Classifier::NewStub(channel_);
    auto stream = stub->ClassifyStream(&ctx);
    stream->Write(Request());
    stream->WritesDone();
    v1::ClassifyResponse r;
    int answers = 0;
    while (stream->Read(&r)) ++answers;
    const grpc::Status s = stream->Finish();
    if (with_token) {
      EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
      EXPECT_EQ(answers, 1);
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(answers, 0);
    }
  }
}

TEST_F(AuthTest, HealthNeedsNoToken) {
  // Kubernetes' gRPC probes cannot send metadata.
  const auto h = client::CheckHealth(channel_, "", kCallTimeoutMs);
  ASSERT_TRUE(h.rpc_status.ok()) << h.rpc_status.error_message();
  EXPECT_EQ(h.serving, client::ServingStatus::kServing);
  EXPECT_EQ(client::CheckHealth(channel_, "ghostserve.v1.Classifier", kCallTimeoutMs).serving,
            client::ServingStatus::kServing);
}

TEST_F(AuthTest, ServerKeepsServingAfterManyRefusals) {
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(Classify(channel_, Bearer("guess-" + std::to_string(i))).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_TRUE(Classify(channel_, Bearer(kToken)).ok());
  EXPECT_EQ(RequestsTotal("unknown", "UNAUTHENTICATED"), 50);
}

TEST_F(AuthTest, ClientLibrarySendsTheTokenFromItsFile) {
  client::ConnectionOptions o;
  o.server = Target();
  o.auth_token_file = Certs::Get()->Path("token");  // the token and a newline
  auto conn = client::Connection::Create(o);
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto channel = conn->MakeChannel();
  // No metadata at the call site: the channel adds it to every call.
  EXPECT_TRUE(Classify(channel).ok());
  EXPECT_TRUE(ModelInfer(channel).ok());
  grpc::ClientContext ctx;
  SetTimeout(ctx, kCallTimeoutMs);
  v1::ListModelsResponse models;
  EXPECT_TRUE(v1::Classifier::NewStub(channel)->ListModels(&ctx, {}, &models).ok());
  EXPECT_EQ(models.models_size(), 1);

  const std::string wrong = Certs::Get()->Path("wrong-token");
  WriteFile(wrong, "not-the-token\n");
  o.auth_token_file = wrong;
  auto bad = client::Connection::Create(o);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(Classify(bad->MakeChannel()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, TokenOverMutualTlsNeedsBoth) {
  service::ServerOptions so = TlsOptions(/*mutual=*/true);
  so.auth_token = kToken;
  StartServer(so);
  EXPECT_EQ(Classify(Channel(Tls("ca", "client"))).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Classify(Channel(Tls("ca")), Bearer(kToken), kFailTimeoutMs).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(Classify(Channel(Tls("ca", "client")), Bearer(kToken)).ok());
}

// ------------------------------------------------------------ gRPC limits

// With at most one stream per connection, a second call on the same
// connection waits until the first one ends.
TEST_F(SecurityTest, MaxConcurrentStreamsOneSerialisesCalls) {
  service::ServerOptions so;
  so.max_concurrent_streams = 1;
  StartServer(so);
  auto channel = Channel(grpc::InsecureChannelCredentials());
  ASSERT_TRUE(Classify(channel).ok());  // connected; the server's SETTINGS are in
  auto stub = v1::Classifier::NewStub(channel);

  grpc::ClientContext stream_ctx;
  SetTimeout(stream_ctx, kCallTimeoutMs);
  auto stream = stub->ClassifyStream(&stream_ctx);
  ASSERT_TRUE(stream->Write(Request()));
  v1::ClassifyResponse r;
  ASSERT_TRUE(stream->Read(&r));  // the stream holds the connection's only slot

  // Queued behind the open stream until its deadline.
  EXPECT_EQ(Classify(channel, {}, 1'500).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  // Once the stream ends, a waiting call goes through.
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    stream->WritesDone();
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(Classify(channel).ok());
  closer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(400));
}

// Keeps a ClassifyStream open on `channel` without sending anything for
// `hold` (less if the server ends it), then closes it; returns how it ended.
grpc::Status HoldIdleStream(const std::shared_ptr<grpc::Channel>& channel,
                            std::chrono::milliseconds hold) {
  auto stub = v1::Classifier::NewStub(channel);
  grpc::ClientContext ctx;
  SetTimeout(ctx, kCallTimeoutMs);
  auto stream = stub->ClassifyStream(&ctx);
  std::promise<void> read_done;
  std::thread reader([&] {
    v1::ClassifyResponse r;
    while (stream->Read(&r)) {
    }
    read_done.set_value();
  });
  // A read that ends early means the connection went away.
  if (read_done.get_future().wait_for(hold) == std::future_status::timeout) {
    stream->WritesDone();
  }
  reader.join();
  return stream->Finish();
}

// Client settings that send a keepalive ping every 50 ms, data or not.
void PingOften(grpc::ChannelArguments* args) {
  args->SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 50);
  args->SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args->SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args->SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 10);
  args->SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
}

// A client that pings every 50 ms, against a server that allows one ping a
// minute and one strike: the server answers GOAWAY too_many_pings and closes
// the connection, which ends the open call. The same client against a
// tolerant server keeps its call.
TEST_F(SecurityTest, ClientPingingTooOftenIsDisconnected) {
  service::ServerOptions so;
  so.keepalive_min_ping_interval_ms = 60'000;
  so.keepalive_max_ping_strikes = 1;
  StartServer(so);
  grpc::ChannelArguments args;
  PingOften(&args);
  auto channel = Channel(grpc::InsecureChannelCredentials(), args);
  const auto start = std::chrono::steady_clock::now();
  // The hold is long and the bound generous: under a loaded CI machine the
  // GOAWAY took 4.06 s once. The message shows the pings were the cause.
  const grpc::Status s = HoldIdleStream(channel, std::chrono::milliseconds(12000));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.error_message().find("ping"), std::string::npos)
      << s.error_code() << " " << s.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(10000))
      << s.error_code() << " " << s.error_message();
  // The server itself is fine: a polite client is served.
  EXPECT_TRUE(Classify(Channel(grpc::InsecureChannelCredentials())).ok());
}

TEST_F(SecurityTest, ClientPingingWithinTheAllowedIntervalKeepsItsCall) {
  service::ServerOptions so;
  so.keepalive_min_ping_interval_ms = 10;
  so.keepalive_max_ping_strikes = 1;
  StartServer(so);
  grpc::ChannelArguments args;
  PingOften(&args);
  auto channel = Channel(grpc::InsecureChannelCredentials(), args);
  const grpc::Status s = HoldIdleStream(channel, std::chrono::milliseconds(1500));
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
}

// A connection older than max-connection-age gets GOAWAY; its open call may
// finish within the grace period and is then cut off.
TEST_F(SecurityTest, MaxConnectionAgeEndsLongCallsAfterTheGrace) {
  service::ServerOptions so;
  so.max_connection_age_ms = 1000;
  so.max_connection_age_grace_ms = 500;
  StartServer(so);
  auto channel = Channel(grpc::InsecureChannelCredentials());
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status s = HoldIdleStream(channel, std::chrono::milliseconds(8000));
  const auto held = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(s.ok());
  EXPECT_LT(held, std::chrono::milliseconds(6000));
  // New calls on the same channel reconnect and succeed. A call that itself
  // outlives a connection's age plus grace (a heavily loaded test machine)
  // is cut off too, so allow a retry on the next connection.
  bool served = false;
  for (int attempt = 0; attempt < 3 && !served; ++attempt) served = Classify(channel).ok();
  EXPECT_TRUE(served);
}

}  // namespace
}  // namespace ghostserve
