// ghostserve: GhostNet image classification over gRPC.
//
// Start-up: parse configuration, size thread pools, load and compile every
// model, start the gRPC and metrics endpoints (health NOT_SERVING), warm up
// every model, then report SERVING. SIGTERM or SIGINT drains: health goes
// NOT_SERVING, new requests get UNAVAILABLE, accepted ones finish (up to
// --drain-timeout-ms), and the process exits 0. Shutdown runs in reverse
// order of start.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "model/threading.h"
#include "server/batcher/clock.h"
#include "server/config/config.h"
#include "server/config/repository_loader.h"
#include "server/core/torch_model.h"
#include "server/metrics/metrics.h"
#include "server/service/server.h"

extern char** environ;

namespace {

std::map<std::string, std::string> Environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

void Log(const std::string& msg) { std::fprintf(stderr, "ghostserve: %s\n", msg.c_str()); }

// The gRPC front-end's options, mapped from the configuration in one place
// (the core's come from config::CoreOptionsFrom).
ghostserve::service::ServerOptions ServerOptionsFrom(const ghostserve::config::ServerConfig& cfg) {
  ghostserve::service::ServerOptions so;
  so.listen = cfg.listen;
  so.metrics_listen = cfg.metrics_listen;
  so.http_listen = cfg.http_listen;
  so.http.io_threads = cfg.http_threads;
  so.http.max_connections = cfg.http_max_connections;
  so.http.idle_timeout_ms = cfg.http_idle_timeout_ms;
  so.http.header_timeout_ms = cfg.http_header_timeout_ms;
  so.http.body_timeout_ms = cfg.http_body_timeout_ms;
  so.http.max_buffered_bytes = static_cast<uint64_t>(cfg.http_max_buffered_bytes);
  so.max_receive_message_bytes = cfg.max_message_bytes;
  so.tls_cert_pem = cfg.tls_cert_pem;
  so.tls_key_pem = cfg.tls_key_pem;
  so.tls_client_ca_pem = cfg.tls_client_ca_pem;
  so.auth_token = cfg.auth_token;
  so.keepalive_time_ms = cfg.keepalive_time_ms;
  so.keepalive_timeout_ms = cfg.keepalive_timeout_ms;
  so.keepalive_min_ping_interval_ms = cfg.keepalive_min_ping_interval_ms;
  so.keepalive_max_ping_strikes = cfg.keepalive_max_ping_strikes;
  so.max_concurrent_streams = cfg.max_concurrent_streams;
  so.max_connection_age_ms = cfg.max_connection_age_ms;
  so.max_connection_age_grace_ms = cfg.max_connection_age_grace_ms;
  so.max_connection_idle_ms = cfg.max_connection_idle_ms;
  so.grpc_memory_bytes = cfg.grpc_memory_bytes;
  so.grpc_max_threads = cfg.grpc_max_threads;
  so.access_log = cfg.access_log;
  so.access_log_sample = cfg.access_log_sample;
  return so;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ghostserve;
  // Block the stop signals before any thread starts, so only sigwait below
  // sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto parsed = config::ParseConfig(std::vector<std::string>(argv + 1, argv + argc), Environment());
  if (!parsed.ok()) {
    if (parsed.status().code() == absl::StatusCode::kCancelled) {
      std::cout << parsed.status().message();
      return 0;
    }
    std::cerr << "ghostserve: " << parsed.status().message() << "\n";
    return 2;
  }
  config::ServerConfig cfg = *parsed;
  const int cpus = model::AvailableCpus();
  if (auto s = config::Finalize(&cfg, cpus); !s.ok()) {
    std::cerr << "ghostserve: " << s.message() << "\n";
    return 2;
  }
  // The main thread loads models single-threaded and never leads an OpenMP
  // team: only the inference executors do (see core/inference_executor.h).
  model::ConfigureThreads(1);
  Log("cpus=" + std::to_string(cpus) + " thread_plan=" + cfg.thread_plan +
      " executors=" + std::to_string(cfg.executors) +
      " inference_threads=" + std::to_string(cfg.inference_threads) +
      " preprocess_threads=" + std::to_string(cfg.preprocess_threads) +
      " batch_workers/model=" + std::to_string(cfg.batch_workers));

  auto registry = std::make_shared<prometheus::Registry>();
  metrics::ServerMetrics metrics(registry.get(), cfg.models);
  auto core = core::CreateInferenceCore(config::CoreOptionsFrom(cfg), config::ModelSpecs(cfg),
                                        batcher::RealClock::Get(), &metrics);
  if (!core.ok()) {
    std::cerr << "ghostserve: " << core.status().message() << "\n";
    return 1;
  }
  std::unique_ptr<core::ModelRepository> repository;
  if (!cfg.model_repository.empty()) {
    auto created = core::ModelRepository::Create(config::RepositoryOptionsFrom(cfg),
                                                 config::GhostNetRepositoryLoader(), core->get(),
                                                 &metrics, Log);
    if (!created.ok()) {
      std::cerr << "ghostserve: --model-repository: " << created.status().message() << "\n";
      return 1;
    }
    repository = std::move(*created);
    Log("model repository " + cfg.model_repository + ", model control " + cfg.model_control_mode +
        (cfg.model_control_mode == "poll"
             ? " every " + std::to_string(cfg.repository_poll_secs) + " s"
             : ""));
    if (auto s = repository->LoadInitial(); !s.ok()) {
      std::cerr << "ghostserve: --model-repository: " << s.message() << "\n";
      return 1;
    }
  }
  for (const auto& s : (*core)->servables()) {
    const auto& m = s->info();
    Log("model " + s->name() + " version " + std::to_string(s->version()) + ": " +
        std::to_string(m.parameters) + " parameters, " + std::to_string(m.macs / 1000000) +
        "M MACs, precision " + m.precision + ", weights " + m.weights_source +
        (m.trained ? "" : " (UNTRAINED: predictions are meaningless)"));
  }

  const service::ServerOptions so = ServerOptionsFrom(cfg);
  auto server = service::GhostServer::Create(so, core->get(), registry, &metrics, repository.get());
  if (!server.ok()) {
    std::cerr << "ghostserve: " << server.status().message() << "\n";
    return 1;
  }
  Log("listening on " + cfg.listen + " (port " + std::to_string((*server)->port()) + ")" +
      (cfg.http_listen.empty() ? std::string()
                               : ", HTTP on " + cfg.http_listen + " (port " +
                                     std::to_string((*server)->http_port()) + ")") +
      (cfg.metrics_listen.empty() ? std::string()
                                  : ", metrics on " + cfg.metrics_listen + " (port " +
                                        std::to_string((*server)->metrics_port()) + ")"));
  // Names the mode and the files, never their contents or the token.
  Log(std::string("gRPC and HTTP transport: ") +
      (cfg.tls_cert.empty() ? "plaintext"
       : cfg.tls_client_ca.empty()
           ? "TLS (cert " + cfg.tls_cert + ")"
           : "mutual TLS (cert " + cfg.tls_cert + ", client CA " + cfg.tls_client_ca + ")") +
      "; bearer token " +
      (cfg.auth_token.empty() ? "off" : "required (from " + cfg.auth_token_file + ")"));
  if (!cfg.auth_token.empty() && cfg.tls_cert.empty()) {
    Log("WARNING: --auth-token-file without --tls-cert: the token travels in plaintext; "
        "only do this behind a TLS-terminating proxy or mesh");
  }
  if (auto s = (*core)->Warmup(); !s.ok()) {
    std::cerr << "ghostserve: " << s.message() << "\n";
    return 1;
  }
  if ((*core)->executor().plan().adaptive) {
    for (const auto& s : (*core)->servables()) {
      const auto cost = s->lone_batch_cost();
      char line[256];
      std::snprintf(line, sizeof(line),
                    "model %s: a lone batch of 1 took %.2f ms single-threaded, %.2f ms on %d "
                    "threads: %s",
                    s->name().c_str(), cost.single_thread_us / 1000.0, cost.all_threads_us / 1000.0,
                    (*core)->executor().plan().executors,
                    cost.use_all_threads ? "all threads when alone"
                                         : "single-threaded always (all threads not 10% faster)");
      Log(line);
    }
  }
  (*server)->SetServing(true);
  if (repository) repository->Start([s = server->get()] { s->UpdateModelHealth(); });
  Log("ready: all models warm, health SERVING");

  int sig = 0;
  sigwait(&stop_signals, &sig);
  Log(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + "; draining for up to " +
      std::to_string(cfg.drain_timeout_ms) + " ms");
  // No model loads or unloads during the drain.
  if (repository) repository->Stop();
  const bool drained = (*server)->Shutdown(cfg.drain_timeout_ms);
  Log(drained ? "drained; exiting" : "drain timed out; exiting with requests cancelled");
  repository.reset();
  server->reset();
  core->reset();
  return 0;
}
