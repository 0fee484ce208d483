#include "server/config/config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "CLI/CLI.hpp"
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

std::string EnvName(const std::string& flag) {
  std::string e = "GHOSTSERVE_" + flag;
  for (char& ch : e) ch = ch == '-' ? '_' : absl::ascii_toupper(ch);
  return e;
}

// Integers are decimal, as absl::SimpleAtoi reads them: the check rewrites the
// value in canonical form, so CLI11 never reads "010" as octal or "0x10" as hex.
CLI::Validator IntIn(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        int64_t n;
        if (!absl::SimpleAtoi(v, &n) || n < lo || n > hi) {
          return absl::StrCat("expects an integer in [", lo, ", ", hi, "], got '", v, "'");
        }
        v = absl::StrCat(n);
        return "";
      },
      "");
}

CLI::Validator HostPort(bool allow_empty) {
  return CLI::Validator(
      [allow_empty](const std::string& v) -> std::string {
        if (v.empty() && allow_empty) return "";
        const size_t colon = v.rfind(':');
        int port;
        if (colon == std::string::npos || colon == 0 ||
            !absl::SimpleAtoi(v.substr(colon + 1), &port) || port < 0 || port > 65535) {
          return absl::StrCat("expects HOST:PORT, got '", v, "'");
        }
        return "";
      },
      "");
}

// Splits a repeatable flag's "NAME=VALUE" at the first '=' (values may hold
// '='); neither part may be empty. `value_name` names the value in the error.
std::pair<std::string, std::string> SplitNameValue(const std::string& v,
                                                   const char* value_name) {
  const size_t eq = v.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
    throw CLI::ValidationError(absl::StrCat("expects NAME=", value_name, ", got '", v, "'"));
  }
  return {v.substr(0, eq), v.substr(eq + 1)};
}

// --help in the layout ghostserve has always printed: each flag, its help,
// its default and its environment variable.
class UsageFormatter : public CLI::Formatter {
 public:
  std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
    std::string u = app->get_description();
    for (const CLI::Option* o : app->get_options()) {
      if (o->get_single_name() == "help") continue;
      const std::string& def = o->get_default_str();
      absl::StrAppend(&u, "  --", o->get_single_name(), " ", o->get_type_name(), "\n      ",
                      o->get_description(), def.empty() ? "" : absl::StrCat(" [", def, "]"),
                      " (env: ", EnvName(o->get_single_name()), ")\n");
    }
    return u;
  }
};

// Every flag, declared once: name, help, where the value goes (its default
// is what a default ServerConfig holds there) and its check. Parsing fills
// `c` and `config_file`.
std::unique_ptr<CLI::App> MakeApp(ServerConfig& c, std::string& config_file) {
  auto app = std::make_unique<CLI::App>(
      "usage: ghostserve [flags]\n\n"
      "Serves GhostNet image classifiers over gRPC (ghostserve.v1.Classifier and the\n"
      "KServe v2 protocol) with dynamic batching and Prometheus metrics.\n\n"
      "Each flag may also come from the environment (GHOSTSERVE_<FLAG>, dashes as\n"
      "underscores) or from a --config FILE of 'flag = value' lines. Precedence:\n"
      "command line > environment > config file > default.\n\n");
  app->formatter(std::make_shared<UsageFormatter>());
  app->allow_extras();  // ParseConfig words the errors for unknown flags itself
  app->option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  // Thrown as soon as it is seen, so values later on the line are not checked.
  app->set_help_flag();
  app->add_flag_callback("-h,--help", [] { throw CLI::CallForHelp(); })->trigger_on_parse();
  app->add_option("--config", config_file, "read flags from FILE")->type_name("FILE");

  app->add_option("--listen", c.listen,
                  "HOST:PORT for gRPC (Classifier, KServe v2, health, reflection)")
      ->check(HostPort(false));
  app->add_option("--metrics-listen", c.metrics_listen,
                  "HOST:PORT for Prometheus GET /metrics (plaintext); empty disables")
      ->check(HostPort(true));
  app->add_option("--http-listen", c.http_listen,
                  "HOST:PORT for HTTP/1.1: KServe v2 REST, POST /v1/models/M:classify, the "
                  "try-it page (GET /) and /metrics; same TLS and token as gRPC; empty disables")
      ->check(HostPort(true));
  app->add_option("--models",
                  "comma-separated built-in models to serve; 'none' serves only --model-config "
                  "models")
      ->default_str(absl::StrJoin(c.models, ","))
      ->each([&c](const std::string& v) {
        std::vector<std::string> names = absl::StrSplit(v, ',', absl::SkipEmpty());
        if (v == "none")
          names.clear();
        else if (names.empty())
          throw CLI::ValidationError("expects at least one model");
        const std::vector<std::string> builtin = BuiltinModelNames();
        for (const auto& n : names) {
          if (std::find(builtin.begin(), builtin.end(), n) == builtin.end()) {
            throw CLI::ValidationError(absl::StrCat("unknown model '", n, "'; built-in models are ",
                                                    absl::StrJoin(builtin, ", ")));
          }
        }
        c.models = names;
        c.models_set = true;
      });
  // Repeatable: every value counts, from the file, the environment and the
  // command line alike.
  app->add_option("--model-config",
                  "model config file (JSON) of a custom GhostNet, or a directory of them; "
                  "repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([&c](const std::string& v) {
        if (v.empty()) throw CLI::ValidationError("expects a file or directory");
        c.model_config_paths.push_back(v);
      });
  app->add_option("--access-log", c.access_log,
                  "one JSON line per inference request (failures always, successes 1 in "
                  "--access-log-sample) to FILE, or '-' for standard error; empty disables")
      ->type_name("FILE");
  app->add_option("--access-log-sample", c.access_log_sample,
                  "log 1 in N successful requests (failed ones always)")
      ->check(CLI::Range(1, 1000000));
  app->add_option("--model-repository", c.model_repository,
                  "DIR of models as DIR/<model>/config.json and DIR/<model>/<version>/ weights "
                  "(README, Model repository); with it, --models defaults to none")
      ->type_name("DIR");
  app->add_option("--model-control-mode", c.model_control_mode,
                  "none: load the repository at start; poll: and re-read it every "
                  "--repository-poll-secs; explicit: load --load-model at start, then only on "
                  "RepositoryModelLoad/Unload requests")
      ->check(CLI::IsMember({"none", "poll", "explicit"}));
  app->add_option("--repository-poll-secs", c.repository_poll_secs,
                  "how often poll mode re-reads the model repository")
      ->check(CLI::Range(1, 86400));
  app->add_option("--load-model",
                  "explicit mode: a repository model to load at start ('*' = all); repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([&c](const std::string& v) {
        if (v.empty()) throw CLI::ValidationError("expects a model name or '*'");
        c.load_models.push_back(v);
      });
  app->add_option("--precision",
                  "NAME=fp32|bf16|int8|auto: the number format a model computes in (NAME '*' = "
                  "every model not named; repository models take theirs from config.json). "
                  "auto = bf16 where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32 "
                  "(never int8); bf16 on a CPU without it stops start-up. int8 needs the "
                  "calibration its model config names (ghostserve-train calibrate); a model "
                  "without one stops start-up. Default fp32; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([&c](const std::string& v) {
        auto [name, value] = SplitNameValue(v, "PRECISION");
        if (auto p = model::ParsePrecision(value); !p.ok()) {
          throw CLI::ValidationError(std::string(p.status().message()));
        }
        c.precision[name] = value;
      });
  app->add_option("--weights",
                  "NAME=PATH: weights for a model (.pth zip or .safetensors); repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([&c](const std::string& v) {
        auto [name, path] = SplitNameValue(v, "PATH");
        c.weights[name] = path;
      });
  const auto int_flag = [&app](const char* name, auto& field, int64_t lo, int64_t hi,
                               const char* help) {
    app->add_option(name, field, help)->transform(IntIn(lo, hi));
  };
  int_flag("--max-batch-size", c.max_batch_size, 1, 1024, "largest batch per model");
  int_flag("--max-batch-delay-us", c.max_batch_delay_us, 0, 10'000'000,
           "longest a request waits for its batch to fill, us");
  int_flag("--max-queue-size", c.max_queue_size, 1, 1'000'000,
           "images per model accepted and waiting (for decoding or a batch) before "
           "UNAVAILABLE on arrival");
  int_flag("--batch-workers", c.batch_workers, 0, 64,
           "threads forming batches, per model; 0 = --executors");
  app->add_option("--thread-plan", c.thread_plan,
                  "how forward passes use the CPUs: adaptive (a lone batch gets all CPUs, "
                  "under load one single-threaded executor per CPU), throughput (always the "
                  "latter), latency (always the former); --executors or --inference-threads "
                  "fix the plan instead")
      ->type_name("PLAN")
      ->check(CLI::IsMember({"adaptive", "throughput", "latency"}));
  int_flag("--executors", c.executors, 0, 64,
           "forward passes that may run at once, shared by all models; 0 = from --thread-plan");
  int_flag("--inference-threads", c.inference_threads, 0, 256,
           "LibTorch threads per executor; 0 = CPUs / executors");
  int_flag("--preprocess-threads", c.preprocess_threads, 0, 256,
           "image decoding threads; 0 = max(1, CPUs/2)");
  int_flag("--preprocess-queue", c.preprocess_queue, 1, 1'000'000,
           "images waiting for decoding before UNAVAILABLE");
  int_flag("--max-message-bytes", c.max_message_bytes, 1024, 1 << 30,
           "largest request message; larger get RESOURCE_EXHAUSTED");
  int_flag("--max-input-bytes", c.max_input_bytes, 1024, int64_t{1} << 40,
           "bytes of images (encoded, or tensors) all accepted requests may hold; beyond it "
           "UNAVAILABLE on arrival");
  int_flag("--max-image-pixels", c.max_image_pixels, 1, int64_t{1} << 32,
           "largest declared width*height accepted");
  int_flag("--max-image-side", c.max_image_side, 1, 1 << 20,
           "largest declared width or height accepted");
  int_flag("--max-images-per-request", c.max_images_per_request, 1, 4096,
           "most images in one KServe request");
  int_flag("--drain-timeout-ms", c.drain_timeout_ms, 0, 3'600'000,
           "on SIGTERM, how long accepted requests may take to finish");
  int_flag("--seed", c.seed, 0, int64_t{1} << 62,
           "seed of the untrained initialisation of models without weights");
  // A file path; empty unsets it (so an empty GHOSTSERVE_* variable is "off").
  const auto path_flag = [&app](const char* name, std::string& field, const char* help) {
    app->add_option(name, field, help)->default_str("off");
  };
  path_flag("--tls-cert", c.tls_cert,
            "PEM certificate chain of the gRPC port; with --tls-key serves TLS only");
  path_flag("--tls-key", c.tls_key, "PEM private key of --tls-cert");
  path_flag("--tls-client-ca", c.tls_client_ca,
            "PEM CA certificates; clients must present a certificate they signed (mutual TLS; "
            "needs --tls-cert)");
  path_flag("--auth-token-file", c.auth_token_file,
            "file whose contents (trailing whitespace stripped) every Classifier and KServe call "
            "must send as 'authorization: Bearer <token>'; health and reflection stay open");
  int_flag("--keepalive-time-ms", c.keepalive_time_ms, 10, 86'400'000,
           "server keepalive ping after this long without activity, ms");
  int_flag("--keepalive-timeout-ms", c.keepalive_timeout_ms, 10, 3'600'000,
           "close a connection whose keepalive ping is not acknowledged within this, ms");
  int_flag("--keepalive-min-ping-interval-ms", c.keepalive_min_ping_interval_ms, 0, 86'400'000,
           "client pings closer together than this (without data) are strikes, ms");
  int_flag("--keepalive-max-ping-strikes", c.keepalive_max_ping_strikes, 0, 1000,
           "strikes before GOAWAY too_many_pings closes the connection; 0 = unlimited");
  int_flag("--max-concurrent-streams", c.max_concurrent_streams, 1, 1'000'000,
           "calls open at once on one connection");
  int_flag("--max-connection-age-ms", c.max_connection_age_ms, 0, 2'000'000'000,
           "GOAWAY a connection this old (+-10% jitter) so clients re-resolve; 0 = never");
  int_flag("--max-connection-age-grace-ms", c.max_connection_age_grace_ms, 0, 2'000'000'000,
           "how long calls of an aged-out connection may still run, ms");
  int_flag("--max-connection-idle-ms", c.max_connection_idle_ms, 0, 2'000'000'000,
           "close a connection with no calls for this long; 0 = never");
  int_flag("--grpc-memory-bytes", c.grpc_memory_bytes, 0, int64_t{1} << 40,
           "gRPC resource quota: memory its transport may hold; 0 = unlimited");
  int_flag("--grpc-max-threads", c.grpc_max_threads, 0, 100'000,
           "gRPC resource quota: threads of its synchronous-API pool (reflection); 0 = "
           "unlimited, else at least 2");
  int_flag("--http-threads", c.http_threads, 1, 64, "HTTP I/O threads");
  int_flag("--http-max-connections", c.http_max_connections, 1, 1'000'000,
           "HTTP connections open at once; one more gets 503 and is closed");
  int_flag("--http-idle-timeout-ms", c.http_idle_timeout_ms, 100, 86'400'000,
           "close an HTTP keep-alive connection with no new request for this long, ms");
  int_flag("--http-header-timeout-ms", c.http_header_timeout_ms, 100, 3'600'000,
           "a request's whole header must arrive within this of its first byte (else 408), ms");
  int_flag("--http-body-timeout-ms", c.http_body_timeout_ms, 100, 3'600'000,
           "a request's whole body must arrive within this of its header (else 408), ms");
  int_flag("--http-max-buffered-bytes", c.http_max_buffered_bytes, 1024, int64_t{1} << 40,
           "bytes of HTTP request bodies being received or handled at once (each reserves its "
           "Content-Length before it is read); beyond it 503. At least --max-message-bytes");
  for (CLI::Option* o : app->get_options()) {
    if (o->get_type_name() != "FILE") o->type_name("VALUE");
  }
  return app;
}

// The flags a file or the environment may set: all but --config and --help.
bool Settable(const CLI::Option* o) {
  return o != nullptr && o->get_single_name() != "help" && o->get_single_name() != "config";
}

// CLI11 says "--flag: problem"; ghostserve's messages read "--flag problem".
std::string Reword(std::string message) {
  const size_t colon = message.find(": ");
  if (absl::StartsWith(message, "--") && colon != std::string::npos &&
      message.find(' ') == colon + 1) {
    message.erase(colon, 1);
  }
  return message;
}

// Sets `o` from `values` (several for a repeatable flag), through the same
// checks as the command line; errors start with `where`.
absl::Status Apply(CLI::Option* o, const std::vector<std::string>& values,
                   const std::string& where) {
  try {
    o->clear();
    for (const std::string& v : values) o->add_result(v);
    o->run_callback();
  } catch (const CLI::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", Reword(e.what())));
  }
  return absl::OkStatus();
}

// Lines of "name = value" (or "name value"); '#' starts a comment; a name may
// repeat where the flag is repeatable.
absl::Status ApplyFile(CLI::App& app, const std::string& path) {
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
    const std::string where = absl::StrCat(path, ":", lineno);
    // The name ends at the first '=' or blank; values may contain '='
    // (weights = ghostnet_100=/models/w.pth, or weights ghostnet_100=...).
    size_t sep = l.find_first_of("= \t");
    if (sep == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected 'name = value'"));
    }
    std::string name(absl::StripAsciiWhitespace(l.substr(0, sep)));
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(l.substr(sep));
    if (!rest.empty() && rest.front() == '=') rest.remove_prefix(1);
    if (absl::StartsWith(name, "--")) name = name.substr(2);
    CLI::Option* o = app.get_option_no_throw("--" + name);
    if (!Settable(o)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown option '", name, "'"));
    }
    if (auto s = Apply(o, {std::string(absl::StripAsciiWhitespace(rest))}, where); !s.ok()) {
      return s;
    }
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
  ServerConfig defaults;
  std::string config_file;
  return MakeApp(defaults, config_file)->help();
}

absl::StatusOr<ServerConfig> ParseConfig(const std::vector<std::string>& args,
                                         const std::map<std::string, std::string>& env) {
  ServerConfig c;
  std::string config_file;
  if (auto it = env.find("GHOSTSERVE_CONFIG"); it != env.end()) config_file = it->second;
  std::unique_ptr<CLI::App> app = MakeApp(c, config_file);
  // CLI11 takes the arguments last first. It would read "--flag=" as "--flag"
  // with the next argument as its value; it means an empty value.
  std::vector<std::string> reversed;
  for (auto a = args.rbegin(); a != args.rend(); ++a) {
    const bool empty_value = absl::StartsWith(*a, "--") && a->find('=') == a->size() - 1;
    if (empty_value) reversed.emplace_back();
    reversed.push_back(empty_value ? a->substr(0, a->size() - 1) : *a);
  }
  // 1. The command line alone, to find --config and --help and check it.
  absl::Status error;
  bool help = false;
  try {
    app->parse(reversed);
  } catch (const CLI::CallForHelp&) {
    help = true;
  } catch (const CLI::ArgumentMismatch& e) {
    const std::string what = e.what();
    error =
        absl::InvalidArgumentError(absl::StrCat(what.substr(0, what.find(':')), " needs a value"));
  } catch (const CLI::Error& e) {
    error = absl::InvalidArgumentError(absl::StrCat("command line: ", Reword(e.what())));
  }
  // An unknown flag or a stray argument is reported before anything after it.
  if (!app->remaining().empty()) {
    const std::string a = app->remaining().front();
    return absl::InvalidArgumentError(
        absl::StartsWith(a, "--")
            ? absl::StrCat("unknown flag ", a.substr(0, a.find('=')), " (see --help)")
            : absl::StrCat("unexpected argument '", a, "'"));
  }
  if (help) return absl::CancelledError(Usage());
  if (!error.ok()) return error;
  // 2. Layer by layer, each over the last: default < file < environment <
  // command line. (CLI11's own config and environment handling would put the
  // file over the environment.)
  std::vector<std::pair<CLI::Option*, std::vector<std::string>>> command_line;
  for (CLI::Option* o : app->get_options()) {
    if (Settable(o) && o->count() > 0) command_line.emplace_back(o, o->results());
  }
  c = ServerConfig();
  if (!config_file.empty()) {
    if (auto s = ApplyFile(*app, config_file); !s.ok()) return s;
  }
  for (CLI::Option* o : app->get_options()) {
    auto it = Settable(o) ? env.find(EnvName(o->get_single_name())) : env.end();
    if (it == env.end()) continue;
    std::vector<std::string> values = {it->second};
    // A repeatable flag takes several values, comma-separated.
    if (o->get_multi_option_policy() == CLI::MultiOptionPolicy::TakeAll) {
      values = absl::StrSplit(it->second, ',', absl::SkipEmpty());
    }
    if (auto s = Apply(o, values, it->first); !s.ok()) return s;
  }
  for (const auto& [o, values] : command_line) {
    if (auto s = Apply(o, values, "command line"); !s.ok()) return s;
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
  if (!c->model_repository.empty() && !c->models_set) c->models.clear();
  if (c->model_repository.empty() && (c->model_control_mode != "none" || !c->load_models.empty())) {
    return absl::InvalidArgumentError(
        "--model-control-mode and --load-model need --model-repository");
  }
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
  if (served.empty() && c->model_repository.empty()) {
    return absl::InvalidArgumentError(
        "no models to serve (--models none, no --model-config and no --model-repository)");
  }
  for (const auto& [name, value] : c->precision) {
    if (name != "*" && served.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--precision names model '", name,
                       "', which is not served (served: ", absl::StrJoin(served, ","), ")"));
    }
  }
  for (const auto& [name, path] : c->weights) {
    if (served.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weights names model '", name,
                       "', which is not served (served: ", absl::StrJoin(served, ","), ")"));
    }
  }
  if (c->http_max_buffered_bytes < c->max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http-max-buffered-bytes ", c->http_max_buffered_bytes, " is below --max-message-bytes ",
        c->max_message_bytes, ": a largest request could never be received"));
  }
  if (c->max_input_bytes < c->max_message_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-input-bytes ", c->max_input_bytes, " is below --max-message-bytes ",
                     c->max_message_bytes, ": a largest request could never be accepted"));
  }
  if (auto s = FinalizeSecurity(c); !s.ok()) return s;
  // Under load, one single-threaded forward pass per CPU (no OpenMP barriers
  // to stall when decoding or gRPC preempts a thread): on 2 CPUs this served
  // 341 img/s against 216-292 with one 2-thread executor, but one request
  // alone takes ~2 ms longer. The adaptive plan switches between the two by
  // load (README, Threads); explicit --executors/--inference-threads fix it.
  if (c->executors != 0 || c->inference_threads != 0) {
    c->thread_plan = "fixed";
  } else if (c->thread_plan == "latency") {
    c->executors = 1;
  } else if (c->thread_plan == "adaptive" && cpus < 2) {
    c->thread_plan = "throughput";  // nothing to switch between
  }
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
    auto precision = c.precision.find(spec.name);
    if (precision == c.precision.end()) precision = c.precision.find("*");
    if (precision != c.precision.end()) {
      // Checked when the flag was parsed; "auto" resolves for this CPU here.
      spec.load.inference.precision = *model::ParsePrecision(precision->second);
    }
  }
  return specs;
}

core::RepositoryOptions RepositoryOptionsFrom(const ServerConfig& c) {
  core::RepositoryOptions o;
  o.root = c.model_repository;
  o.control = *core::ParseModelControl(c.model_control_mode);
  o.poll_ms = int64_t{1000} * c.repository_poll_secs;
  o.startup_models = c.load_models;
  return o;
}

core::CoreOptions CoreOptionsFrom(const ServerConfig& c) {
  core::CoreOptions o;
  o.batching.max_batch_size = c.max_batch_size;
  o.batching.max_delay_us = c.max_batch_delay_us;
  o.batching.max_queue_size = c.max_queue_size;
  o.batching.num_workers = c.batch_workers;
  o.executors = c.executors;
  o.intra_op_threads = c.inference_threads;
  o.adaptive_threads = c.thread_plan == "adaptive";
  o.preprocess_threads = c.preprocess_threads;
  o.preprocess_queue = c.preprocess_queue;
  o.max_input_bytes = c.max_input_bytes;
  o.limits.max_bytes = static_cast<size_t>(c.max_message_bytes);
  o.limits.max_pixels = c.max_image_pixels;
  o.limits.max_side = c.max_image_side;
  o.max_images_per_request = c.max_images_per_request;
  return o;
}

}  // namespace ghostserve::config
