#include "server/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "model/loaded_model.h"
#include "server/config/repository_loader.h"

namespace ghostserve::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

using Env = std::map<std::string, std::string>;

// Every flag ParseConfig accepts (besides --config and --help).
const char* const kAllFlags[] = {
    "listen",
    "metrics-listen",
    "models",
    "model-config",
    "weights",
    "precision",
    "max-batch-size",
    "max-batch-delay-us",
    "max-queue-size",
    "batch-workers",
    "thread-plan",
    "executors",
    "inference-threads",
    "preprocess-threads",
    "preprocess-queue",
    "max-message-bytes",
    "max-input-bytes",
    "max-image-pixels",
    "max-image-side",
    "max-images-per-request",
    "drain-timeout-ms",
    "seed",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "auth-token-file",
    "keepalive-time-ms",
    "keepalive-timeout-ms",
    "keepalive-min-ping-interval-ms",
    "keepalive-max-ping-strikes",
    "max-concurrent-streams",
    "max-connection-age-ms",
    "max-connection-age-grace-ms",
    "max-connection-idle-ms",
    "grpc-memory-bytes",
    "http-listen",
    "http-threads",
    "http-max-connections",
    "http-idle-timeout-ms",
    "http-header-timeout-ms",
    "http-body-timeout-ms",
    "http-max-buffered-bytes",
    "grpc-max-threads",
    "model-repository",
    "model-control-mode",
    "repository-poll-secs",
    "load-model",
    "access-log",
    "access-log-sample",
};

// A config file in the test's temporary directory, removed afterwards.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    const char* dir = std::getenv("TEST_TMPDIR");
    path_ = std::string(dir != nullptr ? dir : "/tmp") + "/ghostserve_config_test_XXXXXX";
    const int fd = mkstemp(path_.data());
    EXPECT_GE(fd, 0);
    if (fd >= 0) close(fd);
    std::ofstream(path_) << contents;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

ServerConfig ParseOk(const std::vector<std::string>& args, const Env& env = {}) {
  auto c = ParseConfig(args, env);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ServerConfig();
}

absl::Status ParseError(const std::vector<std::string>& args, const Env& env = {}) {
  auto c = ParseConfig(args, env);
  EXPECT_FALSE(c.ok()) << "expected an error";
  return c.status();
}

TEST(ConfigTest, DefaultsWithoutFlagsEnvOrFile) {
  const ServerConfig c = ParseOk({});
  EXPECT_EQ(c.listen, "0.0.0.0:50051");
  EXPECT_EQ(c.metrics_listen, "0.0.0.0:9464");
  EXPECT_THAT(c.models,
              ElementsAre("ghostnet_050", "ghostnet_100", "ghostnet_130", "ghostnet_050_fashion"));
  EXPECT_TRUE(c.model_config_paths.empty());
  EXPECT_TRUE(c.weights.empty());
  EXPECT_EQ(c.max_batch_size, 8);
  EXPECT_EQ(c.max_batch_delay_us, 2000);
  EXPECT_EQ(c.max_queue_size, 256);
  EXPECT_EQ(c.batch_workers, 0);  // automatic
  EXPECT_EQ(c.executors, 0);      // automatic
  EXPECT_EQ(c.inference_threads, 0);
  EXPECT_EQ(c.preprocess_threads, 0);
  EXPECT_EQ(c.preprocess_queue, 512);
  EXPECT_EQ(c.max_message_bytes, 16 << 20);
  EXPECT_EQ(c.max_image_pixels, 40'000'000);
  EXPECT_EQ(c.max_image_side, 16384);
  EXPECT_EQ(c.max_images_per_request, 64);
  EXPECT_EQ(c.drain_timeout_ms, 20000);
  EXPECT_EQ(c.seed, 0u);
  EXPECT_EQ(c.tls_cert, "");
  EXPECT_EQ(c.tls_key, "");
  EXPECT_EQ(c.tls_client_ca, "");
  EXPECT_EQ(c.auth_token_file, "");
  EXPECT_EQ(c.keepalive_time_ms, 60'000);
  EXPECT_EQ(c.keepalive_timeout_ms, 20'000);
  EXPECT_EQ(c.keepalive_min_ping_interval_ms, 10'000);
  EXPECT_EQ(c.keepalive_max_ping_strikes, 2);
  EXPECT_EQ(c.max_concurrent_streams, 100);
  EXPECT_EQ(c.max_connection_age_ms, 300'000);
  EXPECT_EQ(c.max_connection_age_grace_ms, 30'000);
  EXPECT_EQ(c.max_connection_idle_ms, 120'000);
  EXPECT_EQ(c.grpc_memory_bytes, int64_t{512} << 20);
  EXPECT_EQ(c.grpc_max_threads, 0);
}

TEST(ConfigTest, UnrelatedEnvironmentIsIgnored) {
  const ServerConfig c = ParseOk({}, {{"PATH", "/usr/bin"}, {"MAX_BATCH_SIZE", "99"}});
  EXPECT_EQ(c.max_batch_size, 8);
}

TEST(ConfigTest, CommandLineOverridesEnvOverridesConfigFile) {
  const TempFile file(
      "# comment line\n"
      "max-batch-size = 4\n"
      "max-queue-size = 100   # trailing comment\n"
      "\n"
      "batch-workers 3\n");
  const Env env = {{"GHOSTSERVE_MAX_BATCH_SIZE", "16"}, {"GHOSTSERVE_MAX_QUEUE_SIZE", "200"}};
  const ServerConfig c = ParseOk({"--config", file.path(), "--max-batch-size", "32"}, env);
  EXPECT_EQ(c.max_batch_size, 32);   // command line beats env and file
  EXPECT_EQ(c.max_queue_size, 200);  // env beats file
  EXPECT_EQ(c.batch_workers, 3);     // file beats default
  EXPECT_EQ(c.preprocess_queue, 512);

  // Order on the command line does not matter: --config after the flag.
  const ServerConfig d = ParseOk({"--max-batch-size=32", "--config=" + file.path()}, env);
  EXPECT_EQ(d.max_batch_size, 32);
  EXPECT_EQ(d.max_queue_size, 200);
  EXPECT_EQ(d.batch_workers, 3);
}

TEST(ConfigTest, ConfigFileFromEnvironment) {
  const TempFile file("--max-batch-delay-us = 500\nlisten=127.0.0.1:6000\n");
  const ServerConfig c = ParseOk({}, {{"GHOSTSERVE_CONFIG", file.path()}});
  EXPECT_EQ(c.max_batch_delay_us, 500);
  EXPECT_EQ(c.listen, "127.0.0.1:6000");
  // --config on the command line replaces the one from the environment.
  const TempFile other("max-batch-delay-us = 700\n");
  const ServerConfig d = ParseOk({"--config", other.path()}, {{"GHOSTSERVE_CONFIG", file.path()}});
  EXPECT_EQ(d.max_batch_delay_us, 700);
  EXPECT_EQ(d.listen, "0.0.0.0:50051");
}

TEST(ConfigTest, ConfigFileAcceptsRepeatedWeights) {
  const TempFile file(
      "weights = ghostnet_050=/w/a.pth\n"
      "--weights = ghostnet_100=/w/b.pth\n"
      "weights ghostnet_130=/w/c.pth\n");
  const ServerConfig c = ParseOk({"--config", file.path()});
  EXPECT_THAT(c.weights, UnorderedElementsAre(Pair("ghostnet_050", "/w/a.pth"),
                                              Pair("ghostnet_100", "/w/b.pth"),
                                              Pair("ghostnet_130", "/w/c.pth")));
}

TEST(ConfigTest, ConfigFileErrorsNameFileLineAndKey) {
  const TempFile file("max-batch-size = 4\nfrobnicate = 1\n");
  const absl::Status s = ParseError({"--config", file.path()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(file.path() + ":2"));
  EXPECT_THAT(s.message(), HasSubstr("frobnicate"));

  const TempFile bad_value("max-queue-size = lots\n");
  const absl::Status v = ParseError({"--config", bad_value.path()});
  EXPECT_THAT(v.message(), HasSubstr("max-queue-size"));
  EXPECT_THAT(v.message(), HasSubstr("lots"));

  EXPECT_EQ(ParseError({"--config", "/nonexistent/ghostserve.conf"}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, UnknownFlagIsNamedInError) {
  const absl::Status s = ParseError({"--max-batch-size", "4", "--frobnicate", "1"});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--frobnicate"));
}

TEST(ConfigTest, PositionalArgumentAndMissingValueAreErrors) {
  const absl::Status positional = ParseError({"serve"});
  EXPECT_EQ(positional.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(positional.message(), HasSubstr("serve"));
  const absl::Status missing = ParseError({"--max-batch-size"});
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.message(), HasSubstr("--max-batch-size"));
}

TEST(ConfigTest, BadIntegerIsNamedInError) {
  for (const std::string bad : {"abc", "12x", "", "1.5", "99999999999999999999"}) {
    const absl::Status s = ParseError({"--max-batch-size=" + bad});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--max-batch-size")) << bad;
  }
  const absl::Status env = ParseError({}, {{"GHOSTSERVE_MAX_QUEUE_SIZE", "many"}});
  EXPECT_EQ(env.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(env.message(), HasSubstr("GHOSTSERVE_MAX_QUEUE_SIZE"));
  EXPECT_THAT(env.message(), HasSubstr("many"));
}

TEST(ConfigTest, IntegerOutOfRangeIsError) {
  EXPECT_THAT(ParseError({"--max-batch-size", "0"}).message(), HasSubstr("--max-batch-size"));
  EXPECT_THAT(ParseError({"--max-batch-size", "1025"}).message(), HasSubstr("--max-batch-size"));
  EXPECT_THAT(ParseError({"--batch-workers", "-1"}).message(), HasSubstr("--batch-workers"));
  EXPECT_THAT(ParseError({"--max-batch-delay-us", "10000001"}).message(),
              HasSubstr("--max-batch-delay-us"));
  EXPECT_EQ(ParseOk({"--max-batch-size", "1024"}).max_batch_size, 1024);
  EXPECT_EQ(ParseOk({"--max-batch-delay-us", "0"}).max_batch_delay_us, 0);
}

TEST(ConfigTest, SetsEveryIntegerFlag) {
  const ServerConfig c = ParseOk({
      "--max-batch-size=16",
      "--max-batch-delay-us=5000",
      "--max-queue-size=99",
      "--batch-workers=2",
      "--executors=2",
      "--inference-threads=3",
      "--preprocess-threads=4",
      "--preprocess-queue=77",
      "--max-message-bytes=2048",
      "--max-input-bytes=1099511627776",
      "--max-image-pixels=1000000",
      "--max-image-side=2000",
      "--max-images-per-request=5",
      "--drain-timeout-ms=1500",
      "--seed=4611686018427387904",
  });
  EXPECT_EQ(c.max_batch_size, 16);
  EXPECT_EQ(c.max_batch_delay_us, 5000);
  EXPECT_EQ(c.max_queue_size, 99);
  EXPECT_EQ(c.batch_workers, 2);
  EXPECT_EQ(c.executors, 2);
  EXPECT_EQ(c.inference_threads, 3);
  EXPECT_EQ(c.preprocess_threads, 4);
  EXPECT_EQ(c.preprocess_queue, 77);
  EXPECT_EQ(c.max_message_bytes, 2048);
  EXPECT_EQ(c.max_input_bytes, int64_t{1} << 40);
  EXPECT_EQ(c.max_image_pixels, 1'000'000);
  EXPECT_EQ(c.max_image_side, 2000);
  EXPECT_EQ(c.max_images_per_request, 5);
  EXPECT_EQ(c.drain_timeout_ms, 1500);
  EXPECT_EQ(c.seed, uint64_t{1} << 62);
}

TEST(ConfigTest, ListenAddressesAreChecked) {
  EXPECT_EQ(ParseOk({"--listen", "127.0.0.1:0"}).listen, "127.0.0.1:0");
  EXPECT_EQ(ParseOk({"--listen", "[::1]:50051"}).listen, "[::1]:50051");
  EXPECT_THAT(ParseError({"--listen", "localhost"}).message(), HasSubstr("--listen"));
  EXPECT_THAT(ParseError({"--listen", "host:99999"}).message(), HasSubstr("--listen"));
  EXPECT_THAT(ParseError({"--listen", ""}).message(), HasSubstr("--listen"));
  // Only the metrics address may be empty, which disables the exporter.
  EXPECT_EQ(ParseOk({"--metrics-listen", ""}).metrics_listen, "");
  EXPECT_EQ(ParseOk({"--metrics-listen=127.0.0.1:9000"}).metrics_listen, "127.0.0.1:9000");
}

TEST(ConfigTest, ModelsFlagTakesKnownBuiltinModels) {
  EXPECT_THAT(ParseOk({"--models", "ghostnet_130,ghostnet_050"}).models,
              ElementsAre("ghostnet_130", "ghostnet_050"));
  const absl::Status unknown = ParseError({"--models", "ghostnet_050,resnet50"});
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.message(), HasSubstr("--models"));
  EXPECT_THAT(unknown.message(), HasSubstr("resnet50"));
  EXPECT_THAT(ParseError({"--models", ","}).message(), HasSubstr("--models"));
}

TEST(ConfigTest, WeightsFlagParsesNameEqualsPath) {
  const ServerConfig c = ParseOk({"--weights", "ghostnet_050=/models/a.pth", "--weights",
                                  "ghostnet_100=/models/b=c.safetensors"});
  // Split at the first '=': paths may contain '='.
  EXPECT_THAT(c.weights, UnorderedElementsAre(Pair("ghostnet_050", "/models/a.pth"),
                                              Pair("ghostnet_100", "/models/b=c.safetensors")));
}

TEST(ConfigTest, MalformedWeightsValueIsError) {
  for (const std::string bad : {"ghostnet_050", "=/models/a.pth", "ghostnet_050=", ""}) {
    const absl::Status s = ParseError({"--weights", bad});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--weights")) << bad;
  }
}

TEST(ConfigTest, WeightsFromEnvironmentAreCommaSeparatedPairs) {
  const ServerConfig c =
      ParseOk({}, {{"GHOSTSERVE_WEIGHTS", "ghostnet_050=/w/a.pth,ghostnet_130=/w/c.safetensors"}});
  EXPECT_THAT(c.weights, UnorderedElementsAre(Pair("ghostnet_050", "/w/a.pth"),
                                              Pair("ghostnet_130", "/w/c.safetensors")));
  const absl::Status bad = ParseError({}, {{"GHOSTSERVE_WEIGHTS", "ghostnet_050=/w/a.pth,oops"}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("GHOSTSERVE_WEIGHTS"));
  EXPECT_THAT(bad.message(), HasSubstr("oops"));
}

TEST(ConfigTest, HelpReturnsCancelledWithUsageListingEveryFlag) {
  for (const char* help : {"--help", "-h"}) {
    const absl::Status s = ParseError({"--max-batch-size", "4", help});
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << help;
    EXPECT_EQ(std::string(s.message()), Usage()) << help;
  }
  const std::string usage = Usage();
  EXPECT_THAT(usage, HasSubstr("--config"));
  EXPECT_THAT(usage, HasSubstr("GHOSTSERVE_CONFIG"));
  for (const char* flag : kAllFlags) {
    EXPECT_THAT(usage, HasSubstr(std::string("--") + flag + " ")) << flag;
  }
  EXPECT_THAT(usage, HasSubstr("GHOSTSERVE_MAX_BATCH_DELAY_US"));
  EXPECT_THAT(usage, HasSubstr("GHOSTSERVE_WEIGHTS"));
}

TEST(ConfigTest, EveryFlagInUsageIsAccepted) {
  // The other direction: nothing in the help text is an unknown flag.
  const std::string usage = Usage();
  int flags = 0;
  for (size_t pos = usage.find("  --"); pos != std::string::npos;
       pos = usage.find("  --", pos + 1)) {
    const size_t end = usage.find(' ', pos + 4);
    const std::string name = usage.substr(pos + 4, end - pos - 4);
    if (name == "config") continue;
    ++flags;
    auto c = ParseConfig({"--" + name, "x"}, {});
    if (!c.ok()) {
      EXPECT_THAT(c.status().message(), Not(HasSubstr("unknown flag"))) << name;
    }
  }
  EXPECT_EQ(flags, static_cast<int>(std::size(kAllFlags)));
}

TEST(ConfigTest, EveryFlagHasItsEnvironmentVariable) {
  // GHOSTSERVE_<FLAG> with dashes as underscores, for each flag.
  const std::map<std::string, std::string> values = {
      {"GHOSTSERVE_LISTEN", "127.0.0.1:1"},
      {"GHOSTSERVE_METRICS_LISTEN", ""},
      {"GHOSTSERVE_MODELS", "ghostnet_100"},
      {"GHOSTSERVE_MODEL_CONFIG", "/a.json,/configs"},
      {"GHOSTSERVE_WEIGHTS", "ghostnet_100=/w.pth"},
      {"GHOSTSERVE_MAX_BATCH_SIZE", "2"},
      {"GHOSTSERVE_MAX_BATCH_DELAY_US", "3"},
      {"GHOSTSERVE_MAX_QUEUE_SIZE", "4"},
      {"GHOSTSERVE_BATCH_WORKERS", "5"},
      {"GHOSTSERVE_EXECUTORS", "3"},
      {"GHOSTSERVE_INFERENCE_THREADS", "6"},
      {"GHOSTSERVE_PREPROCESS_THREADS", "7"},
      {"GHOSTSERVE_PREPROCESS_QUEUE", "8"},
      {"GHOSTSERVE_MAX_MESSAGE_BYTES", "4096"},
      {"GHOSTSERVE_MAX_INPUT_BYTES", "8192"},
      {"GHOSTSERVE_MAX_IMAGE_PIXELS", "10"},
      {"GHOSTSERVE_MAX_IMAGE_SIDE", "11"},
      {"GHOSTSERVE_MAX_IMAGES_PER_REQUEST", "12"},
      {"GHOSTSERVE_DRAIN_TIMEOUT_MS", "13"},
      {"GHOSTSERVE_SEED", "14"},
      {"GHOSTSERVE_TLS_CERT", "/tls/server.pem"},
      {"GHOSTSERVE_TLS_KEY", "/tls/server.key"},
      {"GHOSTSERVE_TLS_CLIENT_CA", "/tls/ca.pem"},
      {"GHOSTSERVE_AUTH_TOKEN_FILE", "/secrets/token"},
      {"GHOSTSERVE_KEEPALIVE_TIME_MS", "15"},
      {"GHOSTSERVE_KEEPALIVE_TIMEOUT_MS", "16"},
      {"GHOSTSERVE_KEEPALIVE_MIN_PING_INTERVAL_MS", "17"},
      {"GHOSTSERVE_KEEPALIVE_MAX_PING_STRIKES", "18"},
      {"GHOSTSERVE_MAX_CONCURRENT_STREAMS", "19"},
      {"GHOSTSERVE_MAX_CONNECTION_AGE_MS", "20"},
      {"GHOSTSERVE_MAX_CONNECTION_AGE_GRACE_MS", "21"},
      {"GHOSTSERVE_MAX_CONNECTION_IDLE_MS", "22"},
      {"GHOSTSERVE_GRPC_MEMORY_BYTES", "23"},
      {"GHOSTSERVE_GRPC_MAX_THREADS", "24"},
      {"GHOSTSERVE_HTTP_LISTEN", "127.0.0.1:25"},
      {"GHOSTSERVE_HTTP_THREADS", "3"},
      {"GHOSTSERVE_HTTP_MAX_CONNECTIONS", "26"},
      {"GHOSTSERVE_HTTP_IDLE_TIMEOUT_MS", "2700"},
      {"GHOSTSERVE_HTTP_HEADER_TIMEOUT_MS", "2800"},
      {"GHOSTSERVE_HTTP_BODY_TIMEOUT_MS", "2900"},
      {"GHOSTSERVE_HTTP_MAX_BUFFERED_BYTES", "30000"},
      {"GHOSTSERVE_THREAD_PLAN", "latency"},
      {"GHOSTSERVE_MODEL_REPOSITORY", "/repo"},
      {"GHOSTSERVE_MODEL_CONTROL_MODE", "explicit"},
      {"GHOSTSERVE_REPOSITORY_POLL_SECS", "31"},
      {"GHOSTSERVE_LOAD_MODEL", "a,b"},
      {"GHOSTSERVE_ACCESS_LOG", "-"},
      {"GHOSTSERVE_ACCESS_LOG_SAMPLE", "32"},
      {"GHOSTSERVE_PRECISION", "ghostnet_100=bf16,*=auto"},
  };
  ASSERT_EQ(values.size(), std::size(kAllFlags));
  const ServerConfig c = ParseOk({}, values);
  EXPECT_EQ(c.listen, "127.0.0.1:1");
  EXPECT_EQ(c.metrics_listen, "");
  EXPECT_THAT(c.models, ElementsAre("ghostnet_100"));
  EXPECT_THAT(c.precision, UnorderedElementsAre(Pair("ghostnet_100", "bf16"), Pair("*", "auto")));
  EXPECT_THAT(c.model_config_paths, ElementsAre("/a.json", "/configs"));
  EXPECT_THAT(c.weights, ElementsAre(Pair("ghostnet_100", "/w.pth")));
  EXPECT_EQ(c.max_batch_size, 2);
  EXPECT_EQ(c.max_batch_delay_us, 3);
  EXPECT_EQ(c.max_queue_size, 4);
  EXPECT_EQ(c.batch_workers, 5);
  EXPECT_EQ(c.executors, 3);
  EXPECT_EQ(c.inference_threads, 6);
  EXPECT_EQ(c.thread_plan, "latency");
  EXPECT_EQ(c.model_repository, "/repo");
  EXPECT_EQ(c.model_control_mode, "explicit");
  EXPECT_EQ(c.repository_poll_secs, 31);
  EXPECT_THAT(c.load_models, ElementsAre("a", "b"));
  EXPECT_EQ(c.access_log, "-");
  EXPECT_EQ(c.access_log_sample, 32);
  EXPECT_EQ(c.preprocess_threads, 7);
  EXPECT_EQ(c.preprocess_queue, 8);
  EXPECT_EQ(c.max_message_bytes, 4096);
  EXPECT_EQ(c.max_input_bytes, 8192);
  EXPECT_EQ(c.max_image_pixels, 10);
  EXPECT_EQ(c.max_image_side, 11);
  EXPECT_EQ(c.max_images_per_request, 12);
  EXPECT_EQ(c.drain_timeout_ms, 13);
  EXPECT_EQ(c.seed, 14u);
  EXPECT_EQ(c.tls_cert, "/tls/server.pem");
  EXPECT_EQ(c.tls_key, "/tls/server.key");
  EXPECT_EQ(c.tls_client_ca, "/tls/ca.pem");
  EXPECT_EQ(c.auth_token_file, "/secrets/token");
  EXPECT_EQ(c.keepalive_time_ms, 15);
  EXPECT_EQ(c.keepalive_timeout_ms, 16);
  EXPECT_EQ(c.keepalive_min_ping_interval_ms, 17);
  EXPECT_EQ(c.keepalive_max_ping_strikes, 18);
  EXPECT_EQ(c.max_concurrent_streams, 19);
  EXPECT_EQ(c.max_connection_age_ms, 20);
  EXPECT_EQ(c.max_connection_age_grace_ms, 21);
  EXPECT_EQ(c.max_connection_idle_ms, 22);
  EXPECT_EQ(c.grpc_memory_bytes, 23);
  EXPECT_EQ(c.grpc_max_threads, 24);
  EXPECT_EQ(c.http_listen, "127.0.0.1:25");
  EXPECT_EQ(c.http_threads, 3);
  EXPECT_EQ(c.http_max_connections, 26);
  EXPECT_EQ(c.http_idle_timeout_ms, 2700);
  EXPECT_EQ(c.http_header_timeout_ms, 2800);
  EXPECT_EQ(c.http_body_timeout_ms, 2900);
  EXPECT_EQ(c.http_max_buffered_bytes, 30000);
}

TEST(ConfigTest, FinalizeResolvesAutomaticThreadCountsForTwoCpus) {
  ServerConfig c = ParseOk({});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  EXPECT_EQ(c.executors, 2);           // one forward pass per CPU
  EXPECT_EQ(c.inference_threads, 1);   // single-threaded each
  EXPECT_EQ(c.batch_workers, 2);       // enough to keep both executors busy
  EXPECT_EQ(c.preprocess_threads, 1);  // max(1, 2 / 2)

  ServerConfig one_executor = ParseOk({"--executors", "1"});
  ASSERT_TRUE(Finalize(&one_executor, 2).ok());
  EXPECT_EQ(one_executor.inference_threads, 2);  // all CPUs for the one executor
  EXPECT_EQ(one_executor.batch_workers, 1);

  ServerConfig many_executors = ParseOk({"--executors", "8"});
  ASSERT_TRUE(Finalize(&many_executors, 2).ok());
  EXPECT_EQ(many_executors.inference_threads, 1);  // never 0

  // Batch workers only form batches; they do not divide the CPUs.
  ServerConfig two_workers = ParseOk({"--batch-workers", "2", "--executors", "1"});
  ASSERT_TRUE(Finalize(&two_workers, 2).ok());
  EXPECT_EQ(two_workers.inference_threads, 2);

  ServerConfig one_cpu = ParseOk({});
  ASSERT_TRUE(Finalize(&one_cpu, 1).ok());
  EXPECT_EQ(one_cpu.preprocess_threads, 1);
  EXPECT_EQ(one_cpu.thread_plan, "throughput");  // nothing to adapt between
}

TEST(ConfigTest, ThreadPlans) {
  ServerConfig c = ParseOk({});
  ASSERT_TRUE(Finalize(&c, 4).ok());
  EXPECT_EQ(c.thread_plan, "adaptive");
  EXPECT_EQ(c.executors, 4);
  EXPECT_EQ(c.inference_threads, 1);
  EXPECT_TRUE(CoreOptionsFrom(c).adaptive_threads);

  ServerConfig latency = ParseOk({"--thread-plan", "latency"});
  ASSERT_TRUE(Finalize(&latency, 4).ok());
  EXPECT_EQ(latency.executors, 1);
  EXPECT_EQ(latency.inference_threads, 4);
  EXPECT_FALSE(CoreOptionsFrom(latency).adaptive_threads);

  ServerConfig throughput = ParseOk({"--thread-plan", "throughput"});
  ASSERT_TRUE(Finalize(&throughput, 4).ok());
  EXPECT_EQ(throughput.executors, 4);
  EXPECT_EQ(throughput.inference_threads, 1);
  EXPECT_FALSE(CoreOptionsFrom(throughput).adaptive_threads);

  // Explicit counts fix the plan, whatever --thread-plan says.
  ServerConfig fixed = ParseOk({"--thread-plan", "adaptive", "--executors", "2"});
  ASSERT_TRUE(Finalize(&fixed, 4).ok());
  EXPECT_EQ(fixed.thread_plan, "fixed");
  EXPECT_EQ(fixed.inference_threads, 2);
  EXPECT_FALSE(CoreOptionsFrom(fixed).adaptive_threads);

  EXPECT_THAT(std::string(ParseError({"--thread-plan", "fastest"}).message()),
              HasSubstr("--thread-plan"));
}

TEST(ConfigTest, FinalizeKeepsExplicitThreadCounts) {
  ServerConfig c = ParseOk({"--inference-threads", "3", "--preprocess-threads", "5"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  EXPECT_EQ(c.inference_threads, 3);
  EXPECT_EQ(c.preprocess_threads, 5);
}

TEST(ConfigTest, FinalizeRejectsWeightsForModelNotServed) {
  ServerConfig c = ParseOk({"--models", "ghostnet_050", "--weights", "ghostnet_100=/models/b.pth"});
  const absl::Status s = Finalize(&c, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("ghostnet_100"));

  ServerConfig ok = ParseOk({"--models", "ghostnet_050", "--weights", "ghostnet_050=/a.pth"});
  EXPECT_TRUE(Finalize(&ok, 2).ok());
}

TEST(ConfigTest, DefaultsServeTheFashionModelFromTheBinary) {
  ServerConfig c = ParseOk({});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  const std::vector<core::ModelSpec> specs = ModelSpecs(c);
  ASSERT_EQ(specs.size(), 4u);
  const core::ModelSpec& f = specs[3];
  EXPECT_EQ(f.name, "ghostnet_050_fashion");
  EXPECT_EQ(f.load.name, "ghostnet_050_fashion");
  EXPECT_EQ(f.load.net.in_channels, 1);
  EXPECT_EQ(f.load.net.num_classes, 10);
  EXPECT_TRUE(f.load.weights_path.empty());
  EXPECT_FALSE(f.load.weights_bytes.empty());
  EXPECT_EQ(f.preprocess.channels, 1);
  EXPECT_EQ(f.preprocess.resize_shorter, 0);
  ASSERT_EQ(f.labels.size(), 10u);
  EXPECT_EQ(f.labels[0], "T-shirt/top");
  EXPECT_EQ(f.labels[9], "Ankle boot");

  // --weights overrides the compiled-in weights.
  ServerConfig w = ParseOk({"--models", "ghostnet_050_fashion", "--weights",
                            "ghostnet_050_fashion=/retrained.safetensors"});
  ASSERT_TRUE(Finalize(&w, 2).ok());
  EXPECT_EQ(ModelSpecs(w)[0].load.weights_path, "/retrained.safetensors");
  EXPECT_TRUE(ModelSpecs(w)[0].load.weights_bytes.empty());
}

TEST(ConfigTest, PrecisionFlagSetsNamedModelsAndTheRest) {
  ServerConfig c = ParseOk({"--models", "ghostnet_050,ghostnet_100,ghostnet_130", "--precision",
                            "ghostnet_100=fp32", "--precision", "*=bf16"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  const auto specs = ModelSpecs(c);
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].load.inference.precision, model::Precision::kBf16);
  EXPECT_EQ(specs[1].load.inference.precision, model::Precision::kFp32);
  EXPECT_EQ(specs[2].load.inference.precision, model::Precision::kBf16);

  // Without the flag: fp32. "auto" is resolved for this CPU.
  ServerConfig plain = ParseOk({"--models", "ghostnet_050"});
  ASSERT_TRUE(Finalize(&plain, 2).ok());
  EXPECT_EQ(ModelSpecs(plain)[0].load.inference.precision, model::Precision::kFp32);
  ServerConfig automatic = ParseOk({"--models", "ghostnet_050", "--precision", "*=auto"});
  ASSERT_TRUE(Finalize(&automatic, 2).ok());
  EXPECT_EQ(ModelSpecs(automatic)[0].load.inference.precision, *model::ParsePrecision("auto"));

  for (const std::string bad : {"ghostnet_050", "ghostnet_050=fp16", "=bf16", "ghostnet_050="}) {
    const absl::Status s = ParseError({"--precision", bad});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--precision")) << bad;
  }
  ServerConfig unserved = ParseOk({"--models", "ghostnet_050", "--precision", "ghostnet_100=bf16"});
  const absl::Status s = Finalize(&unserved, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not served"));
}

TEST(ConfigTest, Int8PassesTheCalibrationToLoadModel) {
  // A model config's "calibration" (resolved beside the config) reaches LoadModel.
  const TempFile a(R"({"name": "shoes", "num_classes": 2, "input_channels": 1,
                       "preprocess": {"resize_shorter": 0, "crop_size": 32},
                       "calibration": "shoes.calibration"})");
  ServerConfig c =
      ParseOk({"--models", "ghostnet_050", "--model-config", a.path(), "--precision", "*=int8"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  const std::vector<core::ModelSpec> specs = ModelSpecs(c);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[1].load.inference.precision, model::Precision::kInt8);
  const std::string dir = a.path().substr(0, a.path().rfind('/'));
  EXPECT_EQ(specs[1].load.calibration_path, dir + "/shoes.calibration");

  // An ImageNet model has none: int8 is accepted as a flag, and the load
  // (start-up) fails saying what is missing.
  EXPECT_EQ(specs[0].load.inference.precision, model::Precision::kInt8);
  EXPECT_TRUE(specs[0].load.calibration_path.empty());
  EXPECT_TRUE(specs[0].load.calibration_bytes.empty());
  auto loaded = model::LoadModel(specs[0].load);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("ghostnet_050"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("needs a calibration"));
}

// In a model repository a calibration belongs to one version's weights:
// "calibration" resolves in the version directory, as "weights" does.
TEST(ConfigTest, RepositoryCalibrationIsPerVersion) {
  namespace fs = std::filesystem;
  const fs::path root =
      fs::temp_directory_path() / ("config_test_repository_" + std::to_string(getpid()));
  fs::create_directories(root / "shoes" / "3");
  std::ofstream(root / "shoes" / "config.json")
      << R"({"num_classes": 2, "precision": "int8", "weights": "model.safetensors",
            "calibration": "model.calibration"})";
  auto config =
      ReadRepositoryConfig("shoes", (root / "shoes").string(), (root / "shoes" / "3").string());
  ASSERT_TRUE(config.ok()) << config.status();
  const model::LoadModelOptions load = LoadOptions(*config);
  EXPECT_EQ(load.inference.precision, model::Precision::kInt8);
  EXPECT_EQ(load.weights_path, (root / "shoes" / "3" / "model.safetensors").string());
  EXPECT_EQ(load.calibration_path, (root / "shoes" / "3" / "model.calibration").string());
  fs::remove_all(root);
}

TEST(ConfigTest, ModelConfigFilesAddModels) {
  const TempFile a(R"({"name": "shoes", "num_classes": 2, "labels": ["left", "right"],
                       "input_channels": 1, "preprocess": {"resize_shorter": 0, "crop_size": 32},
                       "weights": "shoes.safetensors"})");
  ServerConfig c = ParseOk({"--models", "ghostnet_050", "--model-config", a.path(), "--weights",
                            "shoes=/elsewhere.pth"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  const std::vector<core::ModelSpec> specs = ModelSpecs(c);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[1].name, "shoes");
  EXPECT_EQ(specs[1].load.net.input_size, 32);
  EXPECT_EQ(specs[1].load.weights_path, "/elsewhere.pth");
  EXPECT_THAT(specs[1].labels, ElementsAre("left", "right"));

  // Only custom models.
  ServerConfig only = ParseOk({"--models", "none", "--model-config", a.path()});
  ASSERT_TRUE(Finalize(&only, 2).ok());
  ASSERT_EQ(ModelSpecs(only).size(), 1u);
  ServerConfig nothing = ParseOk({"--models", "none"});
  EXPECT_THAT(Finalize(&nothing, 2).message(), HasSubstr("no models to serve"));

  // A name may be served once.
  const TempFile clash(R"({"name": "ghostnet_050", "num_classes": 2})");
  ServerConfig dup = ParseOk({"--models", "ghostnet_050", "--model-config", clash.path()});
  EXPECT_THAT(Finalize(&dup, 2).message(), HasSubstr("already served"));
  ServerConfig twice =
      ParseOk({"--models", "none", "--model-config", a.path(), "--model-config", a.path()});
  EXPECT_THAT(Finalize(&twice, 2).message(), HasSubstr("already served"));

  // Config errors name the flag and the file.
  const TempFile bad(R"({"name": "x", "num_classes": 2, "colour": "red"})");
  ServerConfig b = ParseOk({"--model-config", bad.path()});
  const absl::Status s = Finalize(&b, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--model-config"));
  EXPECT_THAT(s.message(), HasSubstr("\"colour\""));
}

TEST(ConfigTest, ImageNetLabelsRunFromTenchToToiletTissue) {
  const std::vector<std::string>& labels = ImageNetLabels();
  ASSERT_EQ(labels.size(), 1000u);
  EXPECT_EQ(labels.front(), "tench");
  EXPECT_EQ(labels.back(), "toilet tissue");
  for (const auto& l : labels) {
    EXPECT_FALSE(l.empty());
    EXPECT_EQ(l.find('\r'), std::string::npos) << "stray carriage return in '" << l << "'";
  }
}

TEST(ConfigTest, ModelSpecsDescribeServedModels) {
  ServerConfig c = ParseOk({"--models", "ghostnet_050,ghostnet_130", "--weights",
                            "ghostnet_130=/models/c.safetensors", "--seed", "7"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  const std::vector<core::ModelSpec> specs = ModelSpecs(c);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].name, "ghostnet_050");
  EXPECT_EQ(specs[1].name, "ghostnet_130");
  EXPECT_EQ(specs[0].load.weights_path, "");
  EXPECT_EQ(specs[1].load.weights_path, "/models/c.safetensors");
  EXPECT_DOUBLE_EQ(specs[0].load.net.width, 0.5);
  EXPECT_DOUBLE_EQ(specs[1].load.net.width, 1.3);
  for (const auto& spec : specs) {
    EXPECT_EQ(spec.load.seed, 7u);
    EXPECT_EQ(spec.load.net.num_classes, 1000);
    EXPECT_TRUE(spec.preprocess.Validate().ok());
    EXPECT_EQ(spec.preprocess.crop_size, 224);
    ASSERT_EQ(spec.labels.size(), 1000u);
    EXPECT_EQ(spec.labels.front(), "tench");
    EXPECT_EQ(spec.labels.back(), "toilet tissue");
  }
}

TEST(ConfigTest, CoreOptionsFromCopiesBatchingAndLimits) {
  ServerConfig c =
      ParseOk({"--max-batch-size=4", "--max-batch-delay-us=100", "--max-queue-size=9",
               "--batch-workers=2", "--executors=2", "--max-message-bytes=4096",
               "--max-image-pixels=5000", "--max-image-side=300", "--max-images-per-request=3",
               "--preprocess-queue=11", "--max-input-bytes=8192"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  const core::CoreOptions o = CoreOptionsFrom(c);
  EXPECT_EQ(o.batching.max_batch_size, 4);
  EXPECT_EQ(o.batching.max_delay_us, 100);
  EXPECT_EQ(o.batching.max_queue_size, 9);
  EXPECT_EQ(o.batching.num_workers, 2);
  EXPECT_EQ(o.executors, 2);
  EXPECT_EQ(o.intra_op_threads, 1);
  EXPECT_EQ(o.preprocess_threads, 1);
  EXPECT_EQ(o.preprocess_queue, 11);
  EXPECT_EQ(o.limits.max_bytes, 4096u);
  EXPECT_EQ(o.limits.max_pixels, 5000);
  EXPECT_EQ(o.limits.max_side, 300);
  EXPECT_EQ(o.max_images_per_request, 3);
  EXPECT_EQ(o.max_input_bytes, 8192);
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
}

TEST(ConfigTest, InputByteBudgetMustHoldTheLargestMessage) {
  ServerConfig c = ParseOk({"--max-message-bytes=4096", "--max-input-bytes=2048"});
  const absl::Status s = Finalize(&c, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--max-input-bytes 2048 is below --max-message-bytes 4096"));
}

TEST(ConfigTest, HttpBodyBudgetMustHoldTheLargestMessage) {
  ServerConfig c = ParseOk({"--max-message-bytes=4096", "--http-max-buffered-bytes=2048"});
  const absl::Status s = Finalize(&c, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("--http-max-buffered-bytes 2048 is below --max-message-bytes 4096"));
}

}  // namespace
}  // namespace ghostserve::config

namespace ghostserve::config {
namespace {

// ------------------------------------------------------------ security flags

// PEM-looking files: Finalize checks the block type, not the cryptography
// (gRPC does that when the port opens).
constexpr char kCertPem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
constexpr char kKeyPem[] = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

absl::Status FinalizeError(const std::vector<std::string>& args, const Env& env = {}) {
  ServerConfig c = ParseOk(args, env);
  const absl::Status s = Finalize(&c, 2);
  EXPECT_FALSE(s.ok()) << "expected an error";
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  return s;
}

TEST(ConfigSecurityTest, TlsCertAndKeyGoTogether) {
  const TempFile cert(kCertPem), key(kKeyPem);
  EXPECT_THAT(FinalizeError({"--tls-cert", cert.path()}).message(), HasSubstr("--tls-key"));
  EXPECT_THAT(FinalizeError({"--tls-key", key.path()}).message(), HasSubstr("--tls-cert"));

  ServerConfig c = ParseOk({"--tls-cert", cert.path(), "--tls-key", key.path()});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  EXPECT_EQ(c.tls_cert_pem, kCertPem);
  EXPECT_EQ(c.tls_key_pem, kKeyPem);
  EXPECT_EQ(c.tls_client_ca_pem, "");

  // No TLS flags: plaintext, nothing read.
  ServerConfig plain = ParseOk({});
  ASSERT_TRUE(Finalize(&plain, 2).ok());
  EXPECT_EQ(plain.tls_cert_pem, "");
  EXPECT_EQ(plain.auth_token, "");
}

TEST(ConfigSecurityTest, ClientCaNeedsTls) {
  const TempFile cert(kCertPem), key(kKeyPem), ca(kCertPem);
  EXPECT_THAT(FinalizeError({"--tls-client-ca", ca.path()}).message(),
              HasSubstr("--tls-client-ca"));
  ServerConfig c =
      ParseOk({"--tls-cert", cert.path(), "--tls-key", key.path(), "--tls-client-ca", ca.path()});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  EXPECT_EQ(c.tls_client_ca_pem, kCertPem);
}

TEST(ConfigSecurityTest, UnreadableOrNonPemFilesNameTheFlag) {
  const TempFile cert(kCertPem), key(kKeyPem), junk("not a certificate\n");
  const absl::Status missing =
      FinalizeError({"--tls-cert", "/nonexistent/cert.pem", "--tls-key", key.path()});
  EXPECT_THAT(missing.message(), HasSubstr("--tls-cert /nonexistent/cert.pem"));
  EXPECT_THAT(missing.message(), HasSubstr("cannot read"));
  EXPECT_THAT(FinalizeError({"--tls-cert", cert.path(), "--tls-key", "/nonexistent/k"}).message(),
              HasSubstr("--tls-key"));
  EXPECT_THAT(FinalizeError({"--tls-cert", junk.path(), "--tls-key", key.path()}).message(),
              HasSubstr("--tls-cert"));
  // Key and certificate swapped.
  EXPECT_THAT(FinalizeError({"--tls-cert", key.path(), "--tls-key", cert.path()}).message(),
              HasSubstr("--tls-cert"));
  EXPECT_THAT(FinalizeError({"--tls-cert", cert.path(), "--tls-key", cert.path()}).message(),
              HasSubstr("--tls-key"));
  EXPECT_THAT(FinalizeError({"--tls-cert", cert.path(), "--tls-key", key.path(), "--tls-client-ca",
                             junk.path()})
                  .message(),
              HasSubstr("--tls-client-ca"));
}

TEST(ConfigSecurityTest, TlsFlagsComeFromEnvironmentAndConfigFile) {
  const TempFile cert(kCertPem), key(kKeyPem);
  ServerConfig env =
      ParseOk({}, {{"GHOSTSERVE_TLS_CERT", cert.path()}, {"GHOSTSERVE_TLS_KEY", key.path()}});
  ASSERT_TRUE(Finalize(&env, 2).ok());
  EXPECT_EQ(env.tls_cert_pem, kCertPem);
  const TempFile file("tls-cert = " + cert.path() + "\ntls-key = " + key.path() + "\n");
  ServerConfig from_file = ParseOk({"--config", file.path()});
  ASSERT_TRUE(Finalize(&from_file, 2).ok());
  EXPECT_EQ(from_file.tls_key_pem, kKeyPem);
  // An empty variable (as a ConfigMap may carry) means "off".
  ServerConfig off = ParseOk({}, {{"GHOSTSERVE_TLS_CERT", ""}, {"GHOSTSERVE_AUTH_TOKEN_FILE", ""}});
  ASSERT_TRUE(Finalize(&off, 2).ok());
  EXPECT_EQ(off.tls_cert_pem, "");
  EXPECT_EQ(off.auth_token, "");
}

TEST(ConfigSecurityTest, AuthTokenFileIsStrippedOfTrailingWhitespace) {
  const TempFile token("abc.DEF-123_~+/=\n\n  \t\n");
  ServerConfig c = ParseOk({"--auth-token-file", token.path()});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  EXPECT_EQ(c.auth_token, "abc.DEF-123_~+/=");
}

TEST(ConfigSecurityTest, EmptyOrBlankTokenIsRefusedWithoutShowingIt) {
  for (const std::string& contents : {std::string(""), std::string("\n"), std::string(" \t\n")}) {
    const TempFile token(contents);
    const absl::Status s = FinalizeError({"--auth-token-file", token.path()});
    EXPECT_THAT(s.message(), HasSubstr("--auth-token-file"));
    EXPECT_THAT(s.message(), HasSubstr("empty"));
  }
  const TempFile inner_blank("secret-part other-part\n");
  const absl::Status s = FinalizeError({"--auth-token-file", inner_blank.path()});
  EXPECT_THAT(s.message(), HasSubstr("--auth-token-file"));
  EXPECT_THAT(s.message(), Not(HasSubstr("secret-part")));
  EXPECT_THAT(FinalizeError({"--auth-token-file", "/nonexistent/token"}).message(),
              HasSubstr("--auth-token-file /nonexistent/token"));
}

TEST(ConfigSecurityTest, LimitFlagsAreRangeChecked) {
  const ServerConfig c = ParseOk(
      {"--keepalive-time-ms=30000", "--keepalive-timeout-ms=5000",
       "--keepalive-min-ping-interval-ms=0", "--keepalive-max-ping-strikes=0",
       "--max-concurrent-streams=1", "--max-connection-age-ms=0", "--max-connection-age-grace-ms=0",
       "--max-connection-idle-ms=0", "--grpc-memory-bytes=0", "--grpc-max-threads=8"});
  EXPECT_EQ(c.keepalive_time_ms, 30000);
  EXPECT_EQ(c.keepalive_timeout_ms, 5000);
  EXPECT_EQ(c.keepalive_min_ping_interval_ms, 0);
  EXPECT_EQ(c.keepalive_max_ping_strikes, 0);
  EXPECT_EQ(c.max_concurrent_streams, 1);
  EXPECT_EQ(c.max_connection_age_ms, 0);
  EXPECT_EQ(c.max_connection_age_grace_ms, 0);
  EXPECT_EQ(c.max_connection_idle_ms, 0);
  EXPECT_EQ(c.grpc_memory_bytes, 0);
  EXPECT_EQ(c.grpc_max_threads, 8);
  for (const auto& [flag, bad] :
       std::vector<std::pair<std::string, std::string>>{{"keepalive-time-ms", "0"},
                                                        {"keepalive-timeout-ms", "-1"},
                                                        {"keepalive-max-ping-strikes", "1001"},
                                                        {"max-concurrent-streams", "0"},
                                                        {"max-connection-age-ms", "3000000000"},
                                                        {"grpc-memory-bytes", "-5"},
                                                        {"grpc-max-threads", "lots"}}) {
    EXPECT_THAT(ParseError({"--" + flag, bad}).message(), HasSubstr("--" + flag)) << flag;
  }
  // One thread would leave reflection none to run on.
  EXPECT_THAT(FinalizeError({"--grpc-max-threads", "1"}).message(),
              HasSubstr("--grpc-max-threads"));
  ServerConfig two = ParseOk({"--grpc-max-threads", "2"});
  EXPECT_TRUE(Finalize(&two, 2).ok());
}

TEST(ConfigTest, ModelRepositoryFlags) {
  // With a repository, the built-in models are served only when named.
  ServerConfig c = ParseOk({"--model-repository", "/models", "--model-control-mode", "explicit",
                            "--load-model", "a", "--load-model", "b"});
  ASSERT_TRUE(Finalize(&c, 2).ok());
  EXPECT_TRUE(c.models.empty());
  EXPECT_EQ(c.model_repository, "/models");
  EXPECT_THAT(c.load_models, ElementsAre("a", "b"));
  const core::RepositoryOptions o = RepositoryOptionsFrom(c);
  EXPECT_EQ(o.control, core::ModelControl::kExplicit);
  EXPECT_EQ(o.poll_ms, 15000);
  ServerConfig both = ParseOk({"--model-repository", "/models", "--models", "ghostnet_050"});
  ASSERT_TRUE(Finalize(&both, 2).ok());
  EXPECT_THAT(both.models, ElementsAre("ghostnet_050"));
  ServerConfig poll = ParseOk(
      {"--model-repository", "/m", "--model-control-mode", "poll", "--repository-poll-secs", "3"});
  ASSERT_TRUE(Finalize(&poll, 2).ok());
  EXPECT_EQ(RepositoryOptionsFrom(poll).poll_ms, 3000);

  EXPECT_THAT(ParseError({"--model-control-mode", "sometimes"}).message(),
              HasSubstr("--model-control-mode"));
  EXPECT_THAT(ParseError({"--repository-poll-secs", "0"}).message(),
              HasSubstr("--repository-poll-secs"));
  ServerConfig orphan = ParseOk({"--model-control-mode", "poll"});
  EXPECT_THAT(Finalize(&orphan, 2).message(), HasSubstr("need --model-repository"));
}

}  // namespace
}  // namespace ghostserve::config
