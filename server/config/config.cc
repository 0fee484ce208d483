#include "server/config/config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "model/loaded_model.h"

namespace ghostserve::config {
namespace {

using Setter = std::function<absl::Status(ServerConfig*, const std::string&)>;
// The value a flag holds in `config`, as --help shows it ("" shows nothing).
using Getter = std::function<std::string(const ServerConfig&)>;

// How a flag reads its value into ServerConfig and shows its default.
struct Field {
  Setter set;
  Getter get;
};

struct Flag {
  const char* name;
  const char* help;  // without the default: --help appends it from ServerConfig{}
  Setter set;
  Getter get;

  Flag(const char* n, const char* h, Field f)
      : name(n), help(h), set(std::move(f.set)), get(std::move(f.get)) {}
  Flag(const char* n, const char* h, Setter s, Getter g = nullptr)
      : name(n), help(h), set(std::move(s)), get(std::move(g)) {}
};

template <typename T>
Field Int(T ServerConfig::*field, int64_t lo, int64_t hi) {
  Setter set = [field, lo, hi](ServerConfig* c, const std::string& v) -> absl::Status {
    int64_t n;
    if (!absl::SimpleAtoi(v, &n) || n < lo || n > hi) {
      return absl::InvalidArgumentError(
          absl::StrCat("expects an integer in [", lo, ", ", hi, "], got '", v, "'"));
    }
    c->*field = static_cast<T>(n);
    return absl::OkStatus();
  };
  return {set, [field](const ServerConfig& c) { return absl::StrCat(c.*field); }};
}

Field HostPort(std::string ServerConfig::*field, bool allow_empty) {
  Setter set = [field, allow_empty](ServerConfig* c, const std::string& v) -> absl::Status {
    if (v.empty() && allow_empty) {
      c->*field = "";
      return absl::OkStatus();
    }
    const size_t colon = v.rfind(':');
    int port;
    if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(v.substr(colon + 1), &port) ||
        port < 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("expects HOST:PORT, got '", v, "'"));
    }
    c->*field = v;
    return absl::OkStatus();
  };
  return {set, [field](const ServerConfig& c) { return c.*field; }};
}

// A file path; empty unsets it (so an empty GHOSTSERVE_* variable is "off").
Field Path(std::string ServerConfig::*field) {
  Setter set = [field](ServerConfig* c, const std::string& v) -> absl::Status {
    c->*field = v;
    return absl::OkStatus();
  };
  return {set, [field](const ServerConfig& c) { return (c.*field).empty() ? "off" : c.*field; }};
}

const std::vector<Flag>& Flags() {
  static const auto* const kFlags = new std::vector<Flag>{
      {"listen", "HOST:PORT for gRPC (Classifier, KServe v2, health, reflection)",
       HostPort(&ServerConfig::listen, false)},
      {"metrics-listen", "HOST:PORT for Prometheus GET /metrics; empty disables",
       HostPort(&ServerConfig::metrics_listen, true)},
      {"models",
       "comma-separated built-in models to serve; 'none' serves only --model-config models",
       [](ServerConfig* c, const std::string& v) -> absl::Status {
         std::vector<std::string> names = absl::StrSplit(v, ',', absl::SkipEmpty());
         if (v == "none")
           names.clear();
         else if (names.empty())
           return absl::InvalidArgumentError("expects at least one model");
         const std::vector<std::string> builtin = BuiltinModelNames();
         for (const auto& n : names) {
           if (std::find(builtin.begin(), builtin.end(), n) == builtin.end()) {
             return absl::InvalidArgumentError(absl::StrCat(
                 "unknown model '", n, "'; built-in models are ", absl::StrJoin(builtin, ", ")));
           }
         }
         c->models = names;
         return absl::OkStatus();
       },
       [](const ServerConfig& c) { return absl::StrJoin(c.models, ","); }},
      {"model-config",
       "model config file (JSON) of a custom GhostNet, or a directory of them; repeatable",
       [](ServerConfig* c, const std::string& v) -> absl::Status {
         if (v.empty()) return absl::InvalidArgumentError("expects a file or directory");
         c->model_config_paths.push_back(v);
         return absl::OkStatus();
       }},
      {"weights", "NAME=PATH: weights for a model (.pth zip or .safetensors); repeatable",
       [](ServerConfig* c, const std::string& v) -> absl::Status {
         const size_t eq = v.find('=');
         if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
           return absl::InvalidArgumentError(absl::StrCat("expects NAME=PATH, got '", v, "'"));
         }
         c->weights[v.substr(0, eq)] = v.substr(eq + 1);
         return absl::OkStatus();
       }},
      {"max-batch-size", "largest batch per model", Int(&ServerConfig::max_batch_size, 1, 1024)},
      {"max-batch-delay-us", "longest a request waits for its batch to fill, us",
       Int(&ServerConfig::max_batch_delay_us, 0, 10'000'000)},
      {"max-queue-size", "images waiting per model before UNAVAILABLE",
       Int(&ServerConfig::max_queue_size, 1, 1'000'000)},
      {"batch-workers", "threads forming batches, per model; 0 = --executors",
       Int(&ServerConfig::batch_workers, 0, 64)},
      {"executors", "forward passes that may run at once, shared by all models; 0 = CPUs available",
       Int(&ServerConfig::executors, 0, 64)},
      {"inference-threads", "LibTorch threads per executor; 0 = CPUs / executors",
       Int(&ServerConfig::inference_threads, 0, 256)},
      {"preprocess-threads", "image decoding threads; 0 = max(1, CPUs/2)",
       Int(&ServerConfig::preprocess_threads, 0, 256)},
      {"preprocess-queue", "images waiting for decoding before UNAVAILABLE",
       Int(&ServerConfig::preprocess_queue, 1, 1'000'000)},
      {"max-message-bytes", "largest request message; larger get RESOURCE_EXHAUSTED",
       Int(&ServerConfig::max_message_bytes, 1024, 1 << 30)},
      {"max-image-pixels", "largest declared width*height accepted",
       Int(&ServerConfig::max_image_pixels, 1, int64_t{1} << 32)},
      {"max-image-side", "largest declared width or height accepted",
       Int(&ServerConfig::max_image_side, 1, 1 << 20)},
      {"max-images-per-request", "most images in one KServe request",
       Int(&ServerConfig::max_images_per_request, 1, 4096)},
      {"drain-timeout-ms", "on SIGTERM, how long accepted requests may take to finish",
       Int(&ServerConfig::drain_timeout_ms, 0, 3'600'000)},
      {"seed", "seed of the untrained initialisation of models without weights",
       Int(&ServerConfig::seed, 0, int64_t{1} << 62)},
      {"tls-cert", "PEM certificate chain of the gRPC port; with --tls-key serves TLS only",
       Path(&ServerConfig::tls_cert)},
      {"tls-key", "PEM private key of --tls-cert", Path(&ServerConfig::tls_key)},
      {"tls-client-ca",
       "PEM CA certificates; clients must present a certificate they signed (mutual TLS; "
       "needs --tls-cert)",
       Path(&ServerConfig::tls_client_ca)},
      {"auth-token-file",
       "file whose contents (trailing whitespace stripped) every Classifier and KServe call "
       "must send as 'authorization: Bearer <token>'; health and reflection stay open",
       Path(&ServerConfig::auth_token_file)},
      {"keepalive-time-ms", "server keepalive ping after this long without activity, ms",
       Int(&ServerConfig::keepalive_time_ms, 10, 86'400'000)},
      {"keepalive-timeout-ms",
       "close a connection whose keepalive ping is not acknowledged within this, ms",
       Int(&ServerConfig::keepalive_timeout_ms, 10, 3'600'000)},
      {"keepalive-min-ping-interval-ms",
       "client pings closer together than this (without data) are strikes, ms",
       Int(&ServerConfig::keepalive_min_ping_interval_ms, 0, 86'400'000)},
      {"keepalive-max-ping-strikes",
       "strikes before GOAWAY too_many_pings closes the connection; 0 = unlimited",
       Int(&ServerConfig::keepalive_max_ping_strikes, 0, 1000)},
      {"max-concurrent-streams", "calls open at once on one connection",
       Int(&ServerConfig::max_concurrent_streams, 1, 1'000'000)},
      {"max-connection-age-ms",
       "GOAWAY a connection this old (+-10% jitter) so clients re-resolve; 0 = never",
       Int(&ServerConfig::max_connection_age_ms, 0, 2'000'000'000)},
      {"max-connection-age-grace-ms", "how long calls of an aged-out connection may still run, ms",
       Int(&ServerConfig::max_connection_age_grace_ms, 0, 2'000'000'000)},
      {"max-connection-idle-ms", "close a connection with no calls for this long; 0 = never",
       Int(&ServerConfig::max_connection_idle_ms, 0, 2'000'000'000)},
      {"grpc-memory-bytes", "gRPC resource quota: memory its transport may hold; 0 = unlimited",
       Int(&ServerConfig::grpc_memory_bytes, 0, int64_t{1} << 40)},
      {"grpc-max-threads",
       "gRPC resource quota: threads of its synchronous-API pool (reflection); 0 = unlimited, "
       "else at least 2",
       Int(&ServerConfig::grpc_max_threads, 0, 100'000)},
  };
  return *kFlags;
}

const Flag* FindFlag(const std::string& name) {
  for (const auto& f : Flags()) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

std::string EnvName(const std::string& flag) {
  std::string e = "GHOSTSERVE_" + flag;
  for (char& ch : e) ch = ch == '-' ? '_' : absl::ascii_toupper(ch);
  return e;
}

absl::Status Apply(ServerConfig* c, const std::string& name, const std::string& value,
                   const std::string& where) {
  const Flag* f = FindFlag(name);
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": unknown option '", name, "'"));
  }
  if (auto s = f->set(c, value); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": --", name, " ", s.message()));
  }
  return absl::OkStatus();
}

// Lines of "name = value" (or "name value"); '#' starts a comment; a name may
// repeat where the flag is repeatable.
absl::Status ApplyFile(ServerConfig* c, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path));
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty()) continue;
    // The name ends at the first '=' or blank; values may contain '='
    // (weights = ghostnet_100=/models/w.pth, or weights ghostnet_100=...).
    size_t sep = l.find_first_of("= \t");
    if (sep == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", lineno, ": expected 'name = value'"));
    }
    std::string name(absl::StripAsciiWhitespace(l.substr(0, sep)));
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(l.substr(sep));
    if (!rest.empty() && rest.front() == '=') rest.remove_prefix(1);
    std::string value(absl::StripAsciiWhitespace(rest));
    if (absl::StartsWith(name, "--")) name = name.substr(2);
    if (auto s = Apply(c, name, value, absl::StrCat(path, ":", lineno)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": read error"));
  }
  return bytes.str();
}

// Reads a PEM file and checks it holds a `what` block ("CERTIFICATE" or
// "PRIVATE KEY"), so a swapped or empty file fails here with the flag's name
// rather than later inside gRPC's TLS setup.
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    absl::string_view what) {
  auto pem = ReadSmallFile(flag, path);
  if (!pem.ok()) return pem.status();
  bool found = false;
  for (size_t pos = pem->find("-----BEGIN "); pos != std::string::npos;
       pos = pem->find("-----BEGIN ", pos + 1)) {
    const size_t end = pem->find("-----", pos + 11);
    if (end != std::string::npos && absl::EndsWith(pem->substr(pos + 11, end - pos - 11), what)) {
      found = true;
      break;
    }
  }
  if (!found) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, ": no PEM ", what, " block in the file"));
  }
  return pem;
}

absl::Status FinalizeSecurity(ServerConfig* c) {
  // One thread is the sync server's poller alone: reflection (gRPC's
  // synchronous API) then answers RESOURCE_EXHAUSTED "Server Threadpool
  // Exhausted" (seen with gRPC 1.51); 2 serves it.
  if (c->grpc_max_threads == 1) {
    return absl::InvalidArgumentError(
        "--grpc-max-threads 1 leaves gRPC's reflection service no worker thread; use 0 (no cap) "
        "or at least 2");
  }
  c->tls_cert_pem.clear();
  c->tls_key_pem.clear();
  c->tls_client_ca_pem.clear();
  c->auth_token.clear();
  if (c->tls_cert.empty() != c->tls_key.empty()) {
    return absl::InvalidArgumentError(c->tls_cert.empty()
                                          ? "--tls-key needs --tls-cert (give both or neither)"
                                          : "--tls-cert needs --tls-key (give both or neither)");
  }
  if (!c->tls_client_ca.empty() && c->tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS with client "
        "certificates");
  }
  if (!c->tls_cert.empty()) {
    auto cert = ReadPem("tls-cert", c->tls_cert, "CERTIFICATE");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem("tls-key", c->tls_key, "PRIVATE KEY");
    if (!key.ok()) return key.status();
    c->tls_cert_pem = std::move(*cert);
    c->tls_key_pem = std::move(*key);
  }
  if (!c->tls_client_ca.empty()) {
    auto ca = ReadPem("tls-client-ca", c->tls_client_ca, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    c->tls_client_ca_pem = std::move(*ca);
  }
  if (!c->auth_token_file.empty()) {
    auto token = ReadSmallFile("auth-token-file", c->auth_token_file);
    if (!token.ok()) return token.status();
    absl::string_view t = absl::StripTrailingAsciiWhitespace(*token);
    if (t.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-token-file ", c->auth_token_file, ": the token is empty"));
    }
    // A gRPC metadata value is printable ASCII; a blank inside the token
    // would make "Bearer <token>" ambiguous. The message never shows it.
    for (const char ch : t) {
      if (ch < 0x21 || ch > 0x7e) {
        return absl::InvalidArgumentError(
            absl::StrCat("--auth-token-file ", c->auth_token_file,
                         ": the token may only hold printable ASCII without blanks"));
      }
    }
    c->auth_token = std::string(t);
  }
  return absl::OkStatus();
}

}  // namespace

std::string Usage() {
  std::string u =
      "usage: ghostserve [flags]\n\n"
      "Serves GhostNet image classifiers over gRPC (ghostserve.v1.Classifier and the\n"
      "KServe v2 protocol) with dynamic batching and Prometheus metrics.\n\n"
      "Each flag may also come from the environment (GHOSTSERVE_<FLAG>, dashes as\n"
      "underscores) or from a --config FILE of 'flag = value' lines. Precedence:\n"
      "command line > environment > config file > default.\n\n"
      "  --config FILE\n      read flags from FILE (env: GHOSTSERVE_CONFIG)\n";
  const ServerConfig defaults;
  for (const auto& f : Flags()) {
    const std::string def = f.get ? f.get(defaults) : "";
    absl::StrAppend(&u, "  --", f.name, " VALUE\n      ", f.help,
                    def.empty() && f.get == nullptr ? "" : absl::StrCat(" [", def, "]"),
                    " (env: ", EnvName(f.name), ")\n");
  }
  return u;
}

absl::StatusOr<ServerConfig> ParseConfig(const std::vector<std::string>& args,
                                         const std::map<std::string, std::string>& env) {
  // Split the command line first so --config can be applied before the rest.
  std::vector<std::pair<std::string, std::string>> cli;
  std::string config_file;
  if (auto it = env.find("GHOSTSERVE_CONFIG"); it != env.end()) config_file = it->second;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") return absl::CancelledError(Usage());
    if (!absl::StartsWith(a, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (name == "config") {
      config_file = value;
      continue;
    }
    if (FindFlag(name) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    cli.emplace_back(name, value);
  }
  ServerConfig c;
  if (!config_file.empty()) {
    if (auto s = ApplyFile(&c, config_file); !s.ok()) return s;
  }
  for (const auto& f : Flags()) {
    auto it = env.find(EnvName(f.name));
    if (it == env.end()) continue;
    if (std::string(f.name) == "weights" || std::string(f.name) == "model-config") {
      // Several values, comma-separated.
      for (absl::string_view w : absl::StrSplit(it->second, ',', absl::SkipEmpty())) {
        if (auto s = Apply(&c, f.name, std::string(w), EnvName(f.name)); !s.ok()) return s;
      }
      continue;
    }
    if (auto s = Apply(&c, f.name, it->second, EnvName(f.name)); !s.ok()) return s;
  }
  for (const auto& [name, value] : cli) {
    if (auto s = Apply(&c, name, value, "command line"); !s.ok()) return s;
  }
  return c;
}

std::vector<std::string> BuiltinModelNames() {
  std::vector<std::string> names = model::BuiltinModelNames();
  for (const auto& m : BuiltinModelConfigs()) names.push_back(m.name);
  return names;
}

absl::Status Finalize(ServerConfig* c, int cpus) {
  c->custom_models.clear();
  std::set<std::string> served(c->models.begin(), c->models.end());
  for (const auto& path : c->model_config_paths) {
    auto configs = ReadModelConfigs(path);
    if (!configs.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model-config ", path, ": ", configs.status().message()));
    }
    for (auto& m : *configs) {
      if (!served.insert(m.name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("--model-config ", path, ": model '", m.name,
                         "' is already served (a built-in model in --models, or another config); "
                         "rename it or drop the other"));
      }
      c->custom_models.push_back(std::move(m));
    }
  }
  if (served.empty()) {
    return absl::InvalidArgumentError("no models to serve (--models none and no --model-config)");
  }
  for (const auto& [name, path] : c->weights) {
    if (served.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weights names model '", name,
                       "', which is not served (served: ", absl::StrJoin(served, ","), ")"));
    }
  }
  if (auto s = FinalizeSecurity(c); !s.ok()) return s;
  // Throughput first: one single-threaded forward pass per CPU (no OpenMP
  // barriers to stall when decoding or gRPC preempts a thread). On 2 CPUs
  // this served 341 img/s against 216-292 with one 2-thread executor; one
  // request alone takes ~2 ms longer (README, Threads).
  if (c->executors == 0) c->executors = cpus;
  if (c->batch_workers == 0) c->batch_workers = c->executors;
  if (c->inference_threads == 0) c->inference_threads = std::max(1, cpus / c->executors);
  if (c->preprocess_threads == 0) c->preprocess_threads = std::max(1, cpus / 2);
  return absl::OkStatus();
}

std::vector<core::ModelSpec> ModelSpecs(const ServerConfig& c) {
  std::vector<core::ModelSpec> specs;
  auto from_config = [&](const ModelConfig& m) {
    core::ModelSpec spec;
    spec.name = m.name;
    spec.load = LoadOptions(m);
    spec.preprocess = m.preprocess;
    spec.labels = m.labels;
    return spec;
  };
  for (const auto& name : c.models) {
    core::ModelSpec spec;
    if (auto net = model::BuiltinModelOptions(name); net.ok()) {
      spec.name = name;
      spec.load.net = *net;
      spec.preprocess = preprocess::PreprocessConfig::ImageNet();
      spec.labels = ImageNetLabels();
    } else {
      for (const auto& m : BuiltinModelConfigs()) {
        if (m.name == name) spec = from_config(m);
      }
    }
    specs.push_back(std::move(spec));
  }
  for (const auto& m : c.custom_models) specs.push_back(from_config(m));
  for (auto& spec : specs) {
    spec.load.name = spec.name;
    spec.load.seed = c.seed;
    if (auto it = c.weights.find(spec.name); it != c.weights.end()) {
      spec.load.weights_path = it->second;
      spec.load.weights_bytes = {};
    }
  }
  return specs;
}

core::CoreOptions CoreOptionsFrom(const ServerConfig& c) {
  core::CoreOptions o;
  o.batching.max_batch_size = c.max_batch_size;
  o.batching.max_delay_us = c.max_batch_delay_us;
  o.batching.max_queue_size = c.max_queue_size;
  o.batching.num_workers = c.batch_workers;
  o.executors = c.executors;
  o.intra_op_threads = c.inference_threads;
  o.preprocess_threads = c.preprocess_threads;
  o.preprocess_queue = c.preprocess_queue;
  o.limits.max_bytes = static_cast<size_t>(c.max_message_bytes);
  o.limits.max_pixels = c.max_image_pixels;
  o.limits.max_side = c.max_image_side;
  o.max_images_per_request = c.max_images_per_request;
  return o;
}

}  // namespace ghostserve::config
