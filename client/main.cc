// ghostserve-client: command-line client for a ghostserve server.
//
//   ghostserve-client classify --model ghostnet_100 cat.jpg dog.png
//   ghostserve-client bench --model ghostnet_100 --concurrency 8 --json cat.jpg
//   ghostserve-client eval --model ghostnet_050_fashion fashion-mnist-test/
//   ghostserve-client models
//   ghostserve-client health
//
// Exit codes: 0 success, 1 a call failed (or, for bench, none succeeded),
// 2 bad usage.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "client/bench.h"
#include "client/eval.h"
#include "client/health.h"
#include "client/http_client.h"
#include "client/rpc.h"
#include "ghostserve/v1/classifier.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace ghostserve::client {
namespace {

namespace pb = ::ghostserve::v1;
using Json = nlohmann::ordered_json;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int64_t kMaxTimeoutMs = 24LL * 3600 * 1000;
// top_k travels as uint32; the server rejects more than the model's classes.
constexpr int64_t kMaxTopK = 100000;

constexpr char kUsage[] = R"(usage: ghostserve-client COMMAND [flags] [args]

Commands:
  classify   classify image files and print the predictions
  bench      generate load and report throughput and latency
  eval       top-1 accuracy of a model over a labelled image folder
  models     list the models the server serves
  health     ask the gRPC health service whether the server is serving

Every command takes the connection flags --server, --tls-ca, --tls-cert,
--tls-key, --tls-server-name and --auth-token-file.
Run 'ghostserve-client COMMAND --help' for a command's flags.
)";

constexpr char kClassifyUsage[] =
    R"(usage: ghostserve-client classify [flags] FILE...

Sends each file (JPEG or PNG) in its own Classify call and prints a table per
image, or one JSON line per image with --json. A failed call is reported on
stderr as "FILE: CODE: message"; the others still run.

Flags:

Exit code: 0 when every image was classified, 1 otherwise, 2 on bad usage.
)";

constexpr char kBenchUsage[] = R"(usage: ghostserve-client bench [flags] FILE...

Loads the files into memory and sends them round-robin in Classify calls,
or with --http HOST:PORT as POST /v1/models/MODEL:classify?top_k=K requests
to the server's HTTP listener (one keep-alive connection per request in
flight; the TLS flags make it HTTPS; --server is not used).
By default a closed loop keeps --concurrency calls in flight. With --rate, an
open loop sends R calls per second on a fixed schedule, at most --concurrency
in flight (a send skipped for that counts as error "client_overload"), and
measures latency from the scheduled send time.

Only calls completing in the --duration seconds after the --warmup seconds
count. Latency percentiles are of successful calls. A progress line goes to
stderr once a second.

Flags:

Exit code: 0 when at least one call succeeded in the measured window, 1
otherwise, 2 on bad usage.
)";

constexpr char kEvalUsage[] = R"(usage: ghostserve-client eval [flags] DIR

Sends every image of an ImageFolder tree, DIR/<class>/<file>.{png,jpg,jpeg},
through Classify (top_k 1, the encoded file as it is) and prints one JSON
line: images, correct, top1, errors by code, per-class accuracy, time. A
class directory is named by the class index ("7") or by the exact label the
model returns ("Sneaker"). A failed call counts as a wrong answer.

Flags:

Exit code: 0 when every call succeeded, 1 otherwise, 2 on bad usage.
)";

constexpr char kModelsUsage[] = R"(usage: ghostserve-client models [flags]

Lists the models the server serves (ListModels).

Flags:

Exit code: 0 on success, 1 when the call failed, 2 on bad usage.
)";

constexpr char kHealthUsage[] = R"(usage: ghostserve-client health [flags]

Calls grpc.health.v1.Health/Check and prints the serving status: SERVING,
NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN. Meant for container health checks.

Flags:

Exit code: 0 only when the answer is SERVING, 1 otherwise, 2 on bad usage.
)";

// Prints a usage error the way every subcommand does, and returns its code.
int UsageError(const std::string& command, const std::string& message) {
  std::cerr << "ghostserve-client " << command << ": " << message << "\n"
            << "Run 'ghostserve-client " << command << " --help' for usage.\n";
  return kExitUsage;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open: ", strerror(errno)));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return absl::DataLossError("read error");
  return bytes.str();
}

// The shortest decimal that reads back as `f`, as a double: 0.8123f prints
// as 0.8123 rather than 0.8123000264167786.
double ShortestDouble(float f) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  if (ec != std::errc()) return f;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

// "5.18M", "141.7M", "1.2G": model sizes at a glance.
std::string HumanCount(uint64_t n) {
  const double d = static_cast<double>(n);
  if (d >= 1e9) return absl::StrFormat("%.2fG", d / 1e9);
  if (d >= 1e6) return absl::StrFormat("%.2fM", d / 1e6);
  if (d >= 1e3) return absl::StrFormat("%.1fK", d / 1e3);
  return absl::StrCat(n);
}

std::string RpcError(const grpc::Status& status) {
  return absl::StrCat(StatusCodeName(status.error_code()), ": ", status.error_message());
}

// An integer flag's check: decimal only (CLI11 alone would read "010" as
// octal), rewritten in canonical form.
CLI::Validator IntIn(int64_t min, int64_t max) {
  return CLI::Validator(
      [=](std::string& v) -> std::string {
        int64_t n;
        if (!absl::SimpleAtoi(v, &n) || n < min || n > max) {
          return absl::StrCat("must be an integer in [", min, ", ", max, "], got \"", v, "\"");
        }
        v = absl::StrCat(n);
        return "";
      },
      "");
}

// A finite number in [min, max].
CLI::Validator NumberIn(double min, double max) {
  return CLI::Validator(
      [=](const std::string& v) -> std::string {
        double d;
        if (!absl::SimpleAtod(v, &d) || !std::isfinite(d) || d < min || d > max) {
          return absl::StrCat("must be a number in [", min, ", ", max, "], got \"", v, "\"");
        }
        return "";
      },
      "");
}

// A switch: "--json", or "--json=true|false|1|0".
CLI::Option* AddSwitch(CLI::App& app, const std::string& name, bool& out, const std::string& help) {
  return app.add_flag(name, out, help)
      ->check(CLI::Validator(
          [](const std::string& v) -> std::string {
            if (v == "true" || v == "1" || v == "false" || v == "0") return "";
            return absl::StrCat("takes no value or true/false, got \"", v, "\"");
          },
          ""));
}

// --timeout-ms, which every command takes.
void AddTimeout(CLI::App& app, int64_t& timeout_ms, const std::string& help) {
  app.add_option("--timeout-ms", timeout_ms, help)
      ->transform(IntIn(1, kMaxTimeoutMs))
      ->type_name("T");
}

// The flags of --help as they were laid out by hand: "  --flag TYPE" in 19
// columns (a longer one on a line of its own), then the help and the default;
// a "\n" in a help continues in the same column.
class UsageFormatter : public CLI::Formatter {
 public:
  std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
    std::string out = app->get_description();
    const std::string indent(21, ' ');
    for (const CLI::Option* o : app->get_options()) {
      if (!o->nonpositional() || o == app->get_help_ptr()) continue;
      const bool takes_value = o->get_type_size() > 0;
      const std::string flag =
          absl::StrCat("--", o->get_single_name(), takes_value ? " " + o->get_type_name() : "");
      std::string help = absl::StrReplaceAll(o->get_description(), {{"\n", "\n" + indent}});
      if (takes_value && !o->get_default_str().empty()) {
        absl::StrAppend(&help, " (default ", o->get_default_str(), ")");
      }
      absl::StrAppend(&out,
                      flag.size() > 18 ? absl::StrCat("  ", flag, "\n", indent)
                                       : absl::StrFormat("  %-19s", flag),
                      help, "\n");
    }
    return out + app->get_footer();
  }
};

// CLI11 says "--flag: problem"; the client's messages read "--flag problem".
std::string Reword(std::string message) {
  const size_t colon = message.find(": ");
  if (absl::StartsWith(message, "--") && colon != std::string::npos &&
      message.find(' ') == colon + 1) {
    message.erase(colon, 1);
  }
  return message;
}

// The prologue every subcommand shares: declares the connection flags and
// the command's own (`declare`) on a CLI11 app whose --help is `usage` with
// the flags listed after its "Flags:" line, parses `args` (flags and
// positional arguments in any order, "--" ends the flags), prints the usage
// on --help, reports a bad flag or connection file as a usage error (exit 2),
// and then runs the command with the connection and the positional
// arguments; `run` returns the exit code.
int RunCommand(const std::string& name, const std::string& usage,
               const std::vector<std::string>& args, ConnectionOptions* connection,
               const std::function<void(CLI::App&)>& declare,
               const std::function<int(const Connection&, const std::vector<std::string>&)>& run) {
  const size_t flags_end = usage.find("Flags:\n") + 7;
  CLI::App app(usage.substr(0, flags_end));
  app.footer(usage.substr(flags_end));
  app.formatter(std::make_shared<UsageFormatter>());
  app.allow_extras();  // unknown flags are worded below
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  AddConnectionFlags(app, connection);
  declare(app);
  std::vector<std::string> positional;
  app.add_option("args", positional);
  // CLI11 takes the arguments last first. It would read "--flag=" as "--flag"
  // with the next argument as its value; it means an empty value.
  std::vector<std::string> reversed;
  for (auto a = args.rbegin(); a != args.rend(); ++a) {
    const CLI::Option* o = absl::EndsWith(*a, "=") && absl::StartsWith(*a, "--")
                               ? app.get_option_no_throw(a->substr(0, a->size() - 1))
                               : nullptr;
    if (o != nullptr && o->get_type_size() > 0) reversed.emplace_back();
    reversed.push_back(o != nullptr && o->get_type_size() > 0 ? a->substr(0, a->size() - 1) : *a);
  }
  std::string error;
  bool help = false;
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    help = true;
  } catch (const CLI::ArgumentMismatch& e) {
    const std::string what = e.what();
    error = "missing value for " + what.substr(0, what.find(':'));
  } catch (const CLI::Error& e) {
    error = Reword(e.what());
  }
  // An unknown flag is reported before anything after it. (CLI11 lists the
  // "--" that ends the flags among them.)
  std::vector<std::string> unknown = app.remaining();
  unknown.erase(std::remove(unknown.begin(), unknown.end(), "--"), unknown.end());
  if (!unknown.empty()) {
    const std::string a = unknown.front();
    error = absl::StartsWith(a, "--") ? "unknown flag " + a.substr(0, a.find('='))
                                      : "unknown flag " + a + " (flags start with --)";
  }
  if (!error.empty()) return UsageError(name, error);
  if (help) {
    std::cout << app.help();
    return kExitOk;
  }
  absl::StatusOr<Connection> conn = Connection::Create(*connection);
  if (!conn.ok()) return UsageError(name, std::string(conn.status().message()));
  return run(*conn, positional);
}

// A command's failure after parsing: "ghostserve-client NAME: message" on
// stderr, exit code 1.
int Failed(const std::string& name, const std::string& message) {
  std::cerr << "ghostserve-client " << name << ": " << message << "\n";
  return kExitFailed;
}

int Classify(const std::vector<std::string>& args) {
  ConnectionOptions connection;
  std::string model;
  int64_t top_k = 5;
  bool json = false;
  int64_t timeout_ms = kDefaultTimeoutMs;
  return RunCommand(
      "classify", kClassifyUsage, args, &connection,
      [&](CLI::App& app) {
        app.add_option("--model", model, "model to use, e.g. ghostnet_100 (required; see 'models')")
            ->type_name("NAME");
        app.add_option("--top-k", top_k, "predictions per image")
            ->transform(IntIn(1, kMaxTopK))
            ->type_name("K");
        AddSwitch(app, "--json", json, "one JSON object per image on stdout");
        AddTimeout(app, timeout_ms, "deadline of each call in milliseconds");
      },
      [&](const Connection& conn, const std::vector<std::string>& files) {
        if (model.empty()) return UsageError("classify", "--model is required");
        if (files.empty()) return UsageError("classify", "no image files given");

        auto stub = pb::Classifier::NewStub(conn.MakeChannel());
        int failures = 0;
        for (size_t i = 0; i < files.size(); ++i) {
          const std::string& file = files[i];
          absl::StatusOr<std::string> image = ReadFile(file);
          if (!image.ok()) {
            std::cerr << file << ": " << image.status().message() << "\n";
            ++failures;
            continue;
          }
          pb::ClassifyRequest request;
          request.set_image(*std::move(image));
          request.set_model(model);
          request.set_top_k(static_cast<uint32_t>(top_k));
          // Lets a caller find this call in the server's logs.
          request.set_request_id(absl::StrCat("ghostserve-client-", getpid(), "-", i));
          pb::ClassifyResponse response;
          grpc::ClientContext context;
          SetTimeout(context, timeout_ms);
          const auto sent = std::chrono::steady_clock::now();
          const grpc::Status status = stub->Classify(&context, request, &response);
          const double round_trip_ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent)
                  .count();
          if (!status.ok()) {
            std::cerr << file << ": " << RpcError(status) << "\n";
            ++failures;
            continue;
          }

          const pb::Timing& t = response.timing();
          if (json) {
            Json out;
            out["file"] = file;
            out["model"] = response.model();
            out["request_id"] = response.request_id();
            out["batch_size"] = response.batch_size();
            out["timing_us"] = {{"preprocess_wait", t.preprocess_wait_us()},
                                {"preprocess", t.preprocess_us()},
                                {"queue", t.queue_us()},
                                {"inference", t.inference_us()},
                                {"total", t.total_us()}};
            out["predictions"] = Json::array();
            for (const pb::Prediction& p : response.predictions()) {
              out["predictions"].push_back({{"class_index", p.class_index()},
                                            {"label", p.label()},
                                            {"score", ShortestDouble(p.score())}});
            }
            std::cout << out.dump() << "\n" << std::flush;
            continue;
          }

          size_t label_width = 5;
          for (const pb::Prediction& p : response.predictions()) {
            label_width = std::max(label_width, p.label().size());
          }
          label_width = std::min<size_t>(label_width, 48);
          const int label_cols = static_cast<int>(label_width);
          std::cout << file << "\n"
                    << absl::StrFormat(
                           "  model %s, batch size %u, request id %s\n"
                           "  server ms: preprocess wait %.2f, preprocess %.2f, queue %.2f, "
                           "inference %.2f, total %.2f (round trip %.2f)\n",
                           response.model(), response.batch_size(), response.request_id(),
                           t.preprocess_wait_us() / 1e3, t.preprocess_us() / 1e3,
                           t.queue_us() / 1e3, t.inference_us() / 1e3, t.total_us() / 1e3,
                           round_trip_ms)
                    << absl::StrFormat("  %4s  %5s  %-*s  %7s\n", "rank", "class", label_cols,
                                       "label", "score");
          int rank = 0;
          for (const pb::Prediction& p : response.predictions()) {
            std::cout << absl::StrFormat("  %4d  %5u  %-*s  %7.4f\n", ++rank, p.class_index(),
                                         label_cols, p.label(), p.score());
          }
          if (i + 1 < files.size()) std::cout << "\n";
          std::cout << std::flush;
        }
        return failures == 0 ? kExitOk : kExitFailed;
      });
}

Json BenchJson(const BenchOptions& options, const BenchResult& r, size_t files) {
  Json out;
  out["requests"] = r.requests;
  out["errors"] = r.errors;
  out["images_per_second"] = r.images_per_second;
  // Microsecond resolution is all a client-side clock reading is worth.
  const auto ms = [](double v) { return std::round(v * 1e3) / 1e3; };
  out["latency_ms"] = {{"p50", ms(r.latency_ms.p50)},
                       {"p90", ms(r.latency_ms.p90)},
                       {"p99", ms(r.latency_ms.p99)},
                       {"max", ms(r.latency_ms.max)},
                       {"mean", ms(r.latency_ms.mean)}};
  out["successes"] = r.successes;
  out["errors_by_code"] = Json::object();
  for (const auto& [code, n] : r.errors_by_code) out["errors_by_code"][code] = n;
  out["server_timing_us_mean"] = {{"preprocess_wait", r.server_preprocess_wait_us},
                                  {"preprocess", r.server_preprocess_us},
                                  {"queue", r.server_queue_us},
                                  {"inference", r.server_inference_us},
                                  {"total", r.server_total_us}};
  out["batch_size_mean"] = r.batch_size;
  out["model"] = options.model;
  out["protocol"] = r.protocol;
  out["mode"] = options.rate > 0 ? "open" : "closed";
  out["concurrency"] = options.concurrency;
  if (options.rate > 0) out["rate"] = options.rate;
  out["duration_s"] = r.measured_s;
  out["warmup_s"] = options.warmup_s;
  out["top_k"] = options.top_k;
  out["channels"] = r.channels;
  if (r.protocol == "http") out["connects"] = r.connects;
  out["files"] = files;
  return out;
}

void PrintBenchTable(const BenchOptions& options, const BenchResult& r) {
  std::string mode = options.rate > 0
                         ? absl::StrFormat("open loop at %g/s, at most %d in flight", options.rate,
                                           options.concurrency)
                         : absl::StrFormat("closed loop, %d in flight", options.concurrency);
  const std::string channels =
      r.protocol == "http"
          ? absl::StrFormat("HTTP, %d connections (%d opened)", r.channels, r.connects)
          : absl::StrFormat("gRPC, %d channels", r.channels);
  std::cout << absl::StrFormat(
      "model %s: %s, %s, %g s measured after %g s warm-up\n"
      "requests    %d (%d ok, %d failed)\n"
      "throughput  %.1f images/s\n",
      options.model, mode, channels, r.measured_s, options.warmup_s, r.requests, r.successes,
      r.errors, r.images_per_second);
  if (r.latency_ms.count > 0) {
    std::cout << absl::StrFormat(
        "latency ms  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  (mean %.2f)\n"
        "server ms   preprocess wait %.2f  preprocess %.2f  queue %.2f  inference %.2f  total %.2f"
        "  (mean batch size %.1f)\n",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max, r.latency_ms.mean,
        r.server_preprocess_wait_us / 1e3, r.server_preprocess_us / 1e3, r.server_queue_us / 1e3,
        r.server_inference_us / 1e3, r.server_total_us / 1e3, r.batch_size);
  } else {
    std::cout << "latency ms  no successful calls\n";
  }
  for (const auto& [code, n] : r.errors_by_code) {
    const auto example = r.error_examples.find(code);
    std::cout << absl::StrFormat("errors      %-20s %d  (e.g. \"%s\")\n", code, n,
                                 example == r.error_examples.end() ? "" : example->second);
  }
}

int Bench(const std::vector<std::string>& args) {
  BenchOptions options;
  int64_t concurrency = options.concurrency;
  int64_t top_k = options.top_k;
  bool json = false;
  return RunCommand(
      "bench", kBenchUsage, args, &options.connection,
      [&](CLI::App& app) {
        app.add_option("--model", options.model, "model to use (required)")->type_name("NAME");
        app.add_option("--concurrency", concurrency,
                       "calls in flight, or the cap on them with --rate")
            ->transform(IntIn(1, 100000))
            ->type_name("C");
        app.add_option("--duration", options.duration_s, "measured seconds")
            ->check(NumberIn(0.001, 7 * 24 * 3600))
            ->type_name("S");
        app.add_option("--warmup", options.warmup_s, "unmeasured seconds before the measurement")
            ->check(NumberIn(0, 24 * 3600))
            ->type_name("S");
        app.add_option("--rate", options.rate,
                       "open loop at R calls per second (default: closed loop)")
            ->check(NumberIn(0.001, 1e7))
            ->type_name("R")
            ->default_str("");
        app.add_option("--top-k", top_k, "predictions asked for per call")
            ->transform(IntIn(1, kMaxTopK))
            ->type_name("K");
        app.add_option("--http", options.http_target,
                       "benchmark the HTTP API at this address instead of gRPC")
            ->type_name("ADDR");
        AddSwitch(app, "--json", json,
                  "print the results as one JSON object, the last stdout line");
        AddTimeout(app, options.timeout_ms, "deadline of each call in milliseconds");
      },
      [&](const Connection& /*conn*/, const std::vector<std::string>& files) {
        if (options.model.empty()) return UsageError("bench", "--model is required");
        if (!options.http_target.empty()) {
          if (absl::StatusOr<HttpTarget> t = ParseHttpTarget(options.http_target); !t.ok()) {
            return UsageError("bench", std::string(t.status().message()));
          }
        }
        if (files.empty()) return UsageError("bench", "no image files given");
        options.concurrency = static_cast<int>(concurrency);
        options.top_k = static_cast<uint32_t>(top_k);

        std::vector<std::string> images;
        for (const std::string& file : files) {
          absl::StatusOr<std::string> image = ReadFile(file);
          if (!image.ok()) {
            std::cerr << file << ": " << image.status().message() << "\n";
            return kExitFailed;
          }
          images.push_back(*std::move(image));
        }

        bool progress_shown = false;
        options.on_progress = [&progress_shown](const BenchProgress& p) {
          // Trailing blanks wipe what a longer previous line left behind.
          std::cerr << absl::StrFormat("\r%-7s %6.1fs  requests %d  errors %d  %.1f req/s    ",
                                       p.warming_up ? "warmup" : "bench", p.elapsed_s, p.requests,
                                       p.errors, p.requests_per_second)
                    << std::flush;
          progress_shown = true;
        };
        absl::StatusOr<BenchResult> result = RunBench(options, images);
        if (progress_shown) std::cerr << "\n";
        if (!result.ok()) {
          return UsageError("bench", std::string(result.status().message()));
        }
        if (json) {
          std::cout << BenchJson(options, *result, images.size()).dump() << "\n";
        } else {
          PrintBenchTable(options, *result);
        }
        std::cout << std::flush;
        return result->successes > 0 ? kExitOk : kExitFailed;
      });
}

int Eval(const std::vector<std::string>& args) {
  EvalOptions options;
  int64_t concurrency = options.concurrency;
  int64_t limit = 0;
  return RunCommand(
      "eval", kEvalUsage, args, &options.connection,
      [&](CLI::App& app) {
        app.add_option("--model", options.model, "model to evaluate (required)")->type_name("NAME");
        app.add_option("--concurrency", concurrency, "calls in flight")
            ->transform(IntIn(1, 1024))
            ->type_name("N");
        app.add_option("--limit", limit, "evaluate N images, taken evenly from the classes")
            ->transform(IntIn(0, int64_t{1} << 40))
            ->type_name("N")
            ->default_str("all");
        AddTimeout(app, options.timeout_ms, "deadline of each call in milliseconds");
      },
      [&](const Connection& /*conn*/, const std::vector<std::string>& rest) {
        if (options.model.empty()) return UsageError("eval", "--model is required");
        if (rest.size() != 1) return UsageError("eval", "expects one image directory");
        options.concurrency = static_cast<int>(concurrency);
        auto files = ListImageFolder(rest.front(), limit);
        if (!files.ok()) {
          return Failed("eval", std::string(files.status().message()));
        }
        auto r = RunEval(options, *files);
        if (!r.ok()) {
          return Failed("eval", std::string(r.status().message()));
        }
        Json out;
        out["model"] = options.model;
        out["path"] = "grpc";
        out["images"] = r->images;
        out["correct"] = r->correct;
        out["top1"] = r->images > 0 ? static_cast<double>(r->correct) / r->images : 0.0;
        out["errors"] = r->errors;
        out["errors_by_code"] = Json::object();
        for (const auto& [code, n] : r->errors_by_code) out["errors_by_code"][code] = n;
        out["per_class_top1"] = Json::object();
        for (const auto& [label, counts] : r->per_class) {
          out["per_class_top1"][label] =
              std::round(1e4 * static_cast<double>(counts.second) / counts.first) / 1e4;
        }
        out["seconds"] = std::round(r->seconds * 100) / 100;
        out["images_per_second"] = std::round(r->images / std::max(r->seconds, 1e-9) * 10) / 10;
        std::cout << out.dump() << std::endl;
        return r->errors == 0 ? kExitOk : kExitFailed;
      });
}

int Models(const std::vector<std::string>& args) {
  ConnectionOptions connection;
  bool json = false;
  int64_t timeout_ms = kDefaultTimeoutMs;
  return RunCommand(
      "models", kModelsUsage, args, &connection,
      [&](CLI::App& app) {
        AddSwitch(app, "--json", json, "print the full model descriptions as one JSON object");
        AddTimeout(app, timeout_ms, "deadline of the call in milliseconds");
      },
      [&](const Connection& conn, const std::vector<std::string>& rest) {
        if (!rest.empty()) {
          return UsageError("models", "unexpected argument " + rest.front());
        }

        auto stub = pb::Classifier::NewStub(conn.MakeChannel());
        grpc::ClientContext context;
        SetTimeout(context, timeout_ms);
        pb::ListModelsResponse response;
        const grpc::Status status = stub->ListModels(&context, pb::ListModelsRequest(), &response);
        if (!status.ok()) {
          return Failed("models", RpcError(status));
        }

        if (json) {
          Json out;
          out["models"] = Json::array();
          for (const pb::ModelInfo& m : response.models()) {
            const pb::PreprocessInfo& pre = m.preprocess();
            Json mean = Json::array();
            Json std_dev = Json::array();
            for (float v : pre.mean()) mean.push_back(ShortestDouble(v));
            for (float v : pre.std()) std_dev.push_back(ShortestDouble(v));
            out["models"].push_back({{"name", m.name()},
                                     {"parameters", m.parameters()},
                                     {"macs", m.macs()},
                                     {"width", ShortestDouble(m.width())},
                                     {"input_size", m.input_size()},
                                     {"input_channels", m.input_channels()},
                                     {"num_classes", m.num_classes()},
                                     {"weights_source", m.weights_source()},
                                     {"trained", m.trained()},
                                     {"ready", m.ready()},
                                     {"max_batch_size", m.max_batch_size()},
                                     {"preprocess",
                                      {{"resize_shorter_side", pre.resize_shorter_side()},
                                       {"input_size", pre.input_size()},
                                       {"mean", mean},
                                       {"std", std_dev},
                                       {"color", pre.color()}}}});
          }
          std::cout << out.dump() << "\n";
          return kExitOk;
        }

        int name_width = 4;
        for (const pb::ModelInfo& m : response.models()) {
          name_width = std::max(name_width, static_cast<int>(m.name().size()));
        }
        std::cout << absl::StrFormat("%-*s  %8s  %8s  %5s  %5s  %7s  %7s  %s\n", name_width, "name",
                                     "params", "MACs", "width", "input", "classes", "trained",
                                     "weights");
        for (const pb::ModelInfo& m : response.models()) {
          std::cout << absl::StrFormat("%-*s  %8s  %8s  %5.2f  %5u  %7u  %7s  %s\n", name_width,
                                       m.name(), HumanCount(m.parameters()), HumanCount(m.macs()),
                                       m.width(), m.input_size(), m.num_classes(),
                                       m.trained() ? "yes" : "no", m.weights_source());
        }
        if (response.models().empty()) std::cout << "(no models)\n";
        return kExitOk;
      });
}

int Health(const std::vector<std::string>& args) {
  ConnectionOptions connection;
  std::string service;
  int64_t timeout_ms = kDefaultTimeoutMs;
  return RunCommand(
      "health", kHealthUsage, args, &connection,
      [&](CLI::App& app) {
        app.add_option("--service", service,
                       "service to ask about (default \"\": the whole server)")
            ->type_name("NAME");
        AddTimeout(app, timeout_ms, "deadline of the call in milliseconds");
      },
      [&](const Connection& conn, const std::vector<std::string>& rest) {
        if (!rest.empty()) {
          return UsageError("health", "unexpected argument " + rest.front());
        }

        const HealthCheckResult result = CheckHealth(conn.MakeChannel(), service, timeout_ms);
        // The health protocol answers NOT_FOUND for a service it does not know
        // rather than SERVICE_UNKNOWN, which only Watch uses.
        if (result.rpc_status.error_code() == grpc::StatusCode::NOT_FOUND) {
          std::cout << ServingStatusName(ServingStatus::kServiceUnknown) << "\n";
          return kExitFailed;
        }
        if (!result.rpc_status.ok()) {
          return Failed("health", RpcError(result.rpc_status));
        }
        std::cout << ServingStatusName(result.serving) << "\n";
        return result.serving == ServingStatus::kServing ? kExitOk : kExitFailed;
      });
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "-h" || command == "--help" || command == "help") {
    std::cout << kUsage;
    return kExitOk;
  }
  if (command == "classify") return Classify(args);
  if (command == "bench") return Bench(args);
  if (command == "eval") return Eval(args);
  if (command == "models") return Models(args);
  if (command == "health") return Health(args);
  std::cerr << "ghostserve-client: unknown command \"" << command << "\"\n\n" << kUsage;
  return kExitUsage;
}

}  // namespace
}  // namespace ghostserve::client

int main(int argc, char** argv) { return ghostserve::client::Main(argc, argv); }
