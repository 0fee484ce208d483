// Server configuration: built-in defaults, overridden by a config file, then
// by GHOSTSERVE_* environment variables, then by command-line flags.
#ifndef GHOSTSERVE_SERVER_CONFIG_CONFIG_H_
#define GHOSTSERVE_SERVER_CONFIG_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/config/model_config.h"
#include "server/core/model_repository.h"
#include "server/core/torch_model.h"

namespace ghostserve::config {

// Names --models accepts: the ImageNet GhostNets (ghostnet_050/100/130) and
// the custom models compiled into the binary (ghostnet_050_fashion).
std::vector<std::string> BuiltinModelNames();

struct ServerConfig {
  std::string listen = "0.0.0.0:50051";
  std::string metrics_listen = "0.0.0.0:9464";  // "" disables
  std::string http_listen = "0.0.0.0:8000";     // "" disables
  // Built-in models to serve (default: all of them).
  std::vector<std::string> models = BuiltinModelNames();
  bool models_set = false;  // --models was given
  // A model repository (core/model_repository.h); "" = none.
  std::string model_repository;
  std::string model_control_mode = "none";  // none | poll | explicit
  int repository_poll_secs = 15;
  std::vector<std::string> load_models;  // explicit mode's start-up models
  // Model config files or directories of them (--model-config).
  std::vector<std::string> model_config_paths;
  // model name -> weights file (.pth zip or .safetensors).
  std::map<std::string, std::string> weights;
  // model name (or "*" for every model not named) -> "fp32" | "bf16" |
  // "int8" | "auto" (--precision); overrides a model config's "precision".
  std::map<std::string, std::string> precision;
  int max_batch_size = 8;
  int64_t max_batch_delay_us = 2000;
  int max_queue_size = 256;
  int batch_workers = 0;      // per model, only form batches; 0 = executors
  int executors = 0;          // forward passes running at once; 0 = CPUs
  int inference_threads = 0;  // per executor; 0 = CPUs / executors
  // adaptive | throughput | latency; Finalize makes it "fixed" when
  // executors or inference_threads were set (core/inference_executor.h).
  std::string thread_plan = "adaptive";
  int preprocess_threads = 0;  // 0 = max(1, CPUs / 2)
  int preprocess_queue = 512;
  int max_message_bytes = 16 << 20;
  int64_t max_input_bytes = int64_t{256} << 20;
  int64_t max_image_pixels = 40'000'000;
  int64_t max_image_side = 16384;
  int max_images_per_request = 64;
  int64_t drain_timeout_ms = 20000;
  uint64_t seed = 0;  // for models served without weights

  // Transport security (files; "" = not set). tls_cert and tls_key together
  // turn on TLS; tls_client_ca (only with them) requires client certificates.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // File holding the bearer token every Classifier/KServe call must send.
  std::string auth_token_file;

  // gRPC connection limits, in ms unless noted; see service::ServerOptions.
  int keepalive_time_ms = 60'000;
  int keepalive_timeout_ms = 20'000;
  int keepalive_min_ping_interval_ms = 10'000;
  int keepalive_max_ping_strikes = 2;  // 0 = unlimited
  int max_concurrent_streams = 100;
  int max_connection_age_ms = 300'000;  // 0 = unlimited
  int max_connection_age_grace_ms = 30'000;
  int max_connection_idle_ms = 120'000;            // 0 = unlimited
  int64_t grpc_memory_bytes = int64_t{512} << 20;  // 0 = unlimited
  int grpc_max_threads = 0;                        // 0 = unlimited

  // The access log (service/access_log.h): "" off, "-" stderr, else a file.
  std::string access_log;
  int access_log_sample = 1;

  // HTTP limits; see http::HttpServerOptions.
  int http_threads = 2;
  int http_max_connections = 1024;
  int http_idle_timeout_ms = 60'000;
  int http_header_timeout_ms = 10'000;
  int http_body_timeout_ms = 60'000;
  int64_t http_max_buffered_bytes = int64_t{256} << 20;

  // Filled in by Finalize: the models read from model_config_paths.
  std::vector<ModelConfig> custom_models;
  // Filled in by Finalize: the contents of the TLS files and the token
  // (trailing whitespace stripped). Secrets: never log these.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string tls_client_ca_pem;
  std::string auth_token;
};

// The help text listing every flag, its environment variable and default.
std::string Usage();

// Parses configuration. `env` holds the process environment (name -> value).
// Errors are InvalidArgument with a message naming the flag or key;
// "--help" yields a Cancelled status whose message is the usage text.
absl::StatusOr<ServerConfig> ParseConfig(const std::vector<std::string>& args,
                                         const std::map<std::string, std::string>& env);

// Reads the model config files, checks that every served model name is
// unique and every --weights names a served model, reads and checks the TLS
// and token files (cert and key together, client CA only with them, PEM
// contents, a non-empty printable token), and resolves automatic thread
// counts for `cpus` CPUs. Errors name the flag, never a file's contents.
absl::Status Finalize(ServerConfig* config, int cpus);

// The models and core options the configuration describes (after Finalize).
std::vector<core::ModelSpec> ModelSpecs(const ServerConfig& config);
core::CoreOptions CoreOptionsFrom(const ServerConfig& config);
core::RepositoryOptions RepositoryOptionsFrom(const ServerConfig& config);

// The 1000 ImageNet class names (from torchvision), built into the binary.
const std::vector<std::string>& ImageNetLabels();

}  // namespace ghostserve::config

#endif  // GHOSTSERVE_SERVER_CONFIG_CONFIG_H_
