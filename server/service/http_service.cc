#include "server/service/http_service.h"

#include <prometheus/text_serializer.h>

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <charconv>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/core/request_checks.h"
#include "server/http/multipart.h"
#include "server/service/classifier_service.h"
#include "server/service/classify_conversion.h"
#include "server/service/kserve_conversion.h"
#include "server/service/kserve_rest.h"
#include "server/service/request_recorder.h"
#include "server/service/status_map.h"

namespace ghostserve::service {

extern const char kTryItPage[];  // generated from server/http/www/index.html

namespace {

namespace bhttp = boost::beast::http;
using nlohmann::json;

// Debian's Abseil has its own string_view type.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

enum class Kind {
  kPage,
  kMetrics,
  kHealthz,
  kListModels,
  kClassify,
  kServerMetadata,
  kLive,
  kReady,
  kModelMetadata,
  kModelReady,
  kInfer,
  kModelConfig,       // Triton: GET /v2/models/{m}[/versions/{v}]/config
  kModelStats,        // Triton: GET /v2/models[/{m}[/versions/{v}]]/stats
  kRepositoryIndex,   // Triton: POST /v2/repository/index
  kRepositoryLoad,    // Triton: POST /v2/repository/models/{m}/load
  kRepositoryUnload,  // Triton: POST /v2/repository/models/{m}/unload
};

http::Response Json(http::Status status, const json& body) {
  return http::MakeResponse(status, body.dump(-1, ' ', false, json::error_handler_t::replace),
                            "application/json");
}

// An error answer for a failed call, with the headers its status implies.
http::Response ErrorFor(const absl::Status& status) {
  auto res =
      http::ErrorResponse(static_cast<http::Status>(ToHttpStatus(status)),
                          std::string_view(status.message().data(), status.message().size()));
  if (status.code() == absl::StatusCode::kUnavailable) res.set(bhttp::field::retry_after, "1");
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    res.set(bhttp::field::www_authenticate, "Bearer");
  }
  return res;
}

// %XX escapes in a path segment; nullopt if malformed.
std::optional<std::string> PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size() || !absl::ascii_isxdigit(s[i + 1]) || !absl::ascii_isxdigit(s[i + 2])) {
      return std::nullopt;
    }
    auto hex = [](char c) {
      return absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
    };
    out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
    i += 2;
  }
  return out;
}

// The value of `key` in a query string ("a=1&b=2"), undecoded.
std::optional<absl::string_view> QueryParam(std::string_view query, std::string_view key) {
  for (absl::string_view pair : absl::StrSplit(Av(query), '&')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (kv.first == Av(key)) return kv.second;
  }
  return std::nullopt;
}

// A float as the double its shortest decimal form denotes, so JSON shows
// 0.485 rather than 0.48500001430511475 (the same float either way). Not for
// logits, which must round-trip exactly as the float's own value.
double Short(float f) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), f);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

std::vector<double> Short(const google::protobuf::RepeatedField<float>& v) {
  std::vector<double> out;
  for (float f : v) out.push_back(Short(f));
  return out;
}

json ModelJson(const v1::ModelInfo& m) {
  const auto& p = m.preprocess();
  return json{{"name", m.name()},
              {"parameters", m.parameters()},
              {"macs", m.macs()},
              {"width", Short(m.width())},
              {"input_size", m.input_size()},
              {"input_channels", m.input_channels()},
              {"num_classes", m.num_classes()},
              {"weights_source", m.weights_source()},
              {"trained", m.trained()},
              {"ready", m.ready()},
              {"max_batch_size", m.max_batch_size()},
              {"precision", m.precision()},
              {"preprocess",
               {{"resize_shorter_side", p.resize_shorter_side()},
                {"input_size", p.input_size()},
                {"mean", Short(p.mean())},
                {"std", Short(p.std())},
                {"color", p.color()}}}};
}

json ClassifyJson(const v1::ClassifyResponse& r) {
  json predictions = json::array();
  for (const auto& p : r.predictions()) {
    predictions.push_back(
        {{"class_index", p.class_index()}, {"label", p.label()}, {"score", Short(p.score())}});
  }
  const auto& t = r.timing();
  return json{{"model", r.model()},
              {"request_id", r.request_id()},
              {"batch_size", r.batch_size()},
              {"predictions", std::move(predictions)},
              {"timing",
               {{"preprocess_wait_us", t.preprocess_wait_us()},
                {"preprocess_us", t.preprocess_us()},
                {"queue_us", t.queue_us()},
                {"inference_us", t.inference_us()},
                {"total_us", t.total_us()}}}};
}

}  // namespace

struct HttpService::Route {
  Kind kind;
  bhttp::verb method;
  bool needs_auth;
  std::string model;
  std::string version;
  std::string_view query;
};

namespace {

// Routes `target` (path and query). nullopt for an unknown path; a model
// name that is not valid percent-encoding is unknown too.
std::optional<HttpService::Route> Match(std::string_view target) {
  using Route = HttpService::Route;
  const size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
  auto simple = [&](Kind kind, bhttp::verb method, bool auth) {
    return Route{kind, method, auth, "", "", query};
  };
  if (path == "/" || path == "/index.html") return simple(Kind::kPage, bhttp::verb::get, false);
  if (path == "/metrics") return simple(Kind::kMetrics, bhttp::verb::get, false);
  if (path == "/healthz") return simple(Kind::kHealthz, bhttp::verb::get, false);
  if (path == "/v2" || path == "/v2/") return simple(Kind::kServerMetadata, bhttp::verb::get, true);
  if (path == "/v2/health/live") return simple(Kind::kLive, bhttp::verb::get, false);
  if (path == "/v2/health/ready") return simple(Kind::kReady, bhttp::verb::get, false);
  if (path == "/v1/models") return simple(Kind::kListModels, bhttp::verb::get, true);
  if (path == "/v2/models/stats") return simple(Kind::kModelStats, bhttp::verb::get, true);
  if (path == "/v2/repository/index") {
    return simple(Kind::kRepositoryIndex, bhttp::verb::post, true);
  }
  std::vector<absl::string_view> parts = absl::StrSplit(Av(path.substr(1)), '/');
  auto sv = [](absl::string_view s) { return std::string_view(s.data(), s.size()); };
  if (parts.size() == 5 && parts[0] == "v2" && parts[1] == "repository" && parts[2] == "models" &&
      (parts[4] == "load" || parts[4] == "unload")) {
    auto model = PercentDecode(sv(parts[3]));
    if (!model || model->empty()) return std::nullopt;
    Route r = simple(parts[4] == "load" ? Kind::kRepositoryLoad : Kind::kRepositoryUnload,
                     bhttp::verb::post, true);
    r.model = std::move(*model);
    return r;
  }
  if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "models" &&
      absl::EndsWith(parts[2], ":classify")) {
    auto model = PercentDecode(sv(parts[2].substr(0, parts[2].size() - 9)));
    if (!model || model->empty()) return std::nullopt;
    Route r = simple(Kind::kClassify, bhttp::verb::post, true);
    r.model = std::move(*model);
    return r;
  }
  if (parts.size() < 3 || parts[0] != "v2" || parts[1] != "models" || parts[2].empty()) {
    return std::nullopt;
  }
  auto model = PercentDecode(sv(parts[2]));
  if (!model) return std::nullopt;
  size_t next = 3;
  std::string version;
  if (parts.size() >= 5 && parts[3] == "versions" && !parts[4].empty()) {
    auto v = PercentDecode(sv(parts[4]));
    if (!v) return std::nullopt;
    version = std::move(*v);
    next = 5;
  }
  Route r = simple(Kind::kModelMetadata, bhttp::verb::get, true);
  if (parts.size() == next + 1 && parts[next] == "ready") {
    r.kind = Kind::kModelReady;
  } else if (parts.size() == next + 1 && parts[next] == "infer") {
    r.kind = Kind::kInfer;
    r.method = bhttp::verb::post;
  } else if (parts.size() == next + 1 && parts[next] == "config") {
    r.kind = Kind::kModelConfig;
  } else if (parts.size() == next + 1 && parts[next] == "stats") {
    r.kind = Kind::kModelStats;
  } else if (parts.size() != next) {
    return std::nullopt;
  }
  r.model = std::move(*model);
  r.version = std::move(version);
  return r;
}

}  // namespace

HttpService::HttpService(core::InferenceCore* core, metrics::ServerMetrics* metrics,
                         const BearerAuth* auth, std::string version,
                         std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
                         bool metrics_only, core::ModelRepository* repository, AccessLog* log)
    : core_(core),
      metrics_(metrics),
      auth_(auth),
      version_(std::move(version)),
      collectables_(std::move(collectables)),
      metrics_only_(metrics_only),
      repository_(repository),
      log_(log) {}

bool HttpService::Ready() const { return core_->ready() && core_->accepting(); }

namespace {

// The call's details for the access log from its headers.
template <typename Header>
CallInfo HttpCallInfo(const Header& header, const char* api, const std::string& peer,
                      int64_t bytes_in) {
  CallInfo info;
  info.api = api;
  info.peer = peer;
  info.bytes_in = bytes_in;
  if (auto id = header.find("X-Request-Id"); id != header.end()) {
    info.request_id = std::string(id->value());
  }
  if (auto tp = header.find("traceparent"); tp != header.end()) {
    if (auto valid = ValidTraceparent(std::string_view(tp->value().data(), tp->value().size()))) {
      info.traceparent = std::move(*valid);
    }
  }
  return info;
}

// `respond` that returns the client's traceparent (if valid) with the answer.
http::Responder EchoTraceparent(const std::string& traceparent, http::Responder respond) {
  if (traceparent.empty()) return respond;
  return [traceparent, respond = std::move(respond)](http::Response res) {
    res.set("traceparent", traceparent);
    respond(std::move(res));
  };
}

const char* ApiName(Kind kind) { return kind == Kind::kClassify ? "http.classify" : "http.infer"; }

}  // namespace

std::optional<http::Response> HttpService::CheckHeader(const http::RequestHeader& header,
                                                       const std::string& peer) {
  const auto target = header.target();
  auto route = Match(std::string_view(target.data(), target.size()));
  if (!route || (metrics_only_ && route->kind != Kind::kMetrics && route->kind != Kind::kHealthz)) {
    return http::ErrorResponse(
        http::Status::not_found,
        metrics_only_ ? "this port serves GET /metrics and /healthz only"
                      : "no such endpoint; see GET / for the page, /v1/models, /v2 (KServe v2)");
  }
  if (header.method() != route->method) {
    auto res = http::ErrorResponse(
        http::Status::method_not_allowed,
        absl::StrCat("use ", std::string(bhttp::to_string(route->method)), " here"));
    res.set(bhttp::field::allow, bhttp::to_string(route->method));
    return res;
  }
  if (route->needs_auth && auth_ != nullptr && auth_->enabled()) {
    // (authentication first: an unauthenticated caller learns nothing)
    absl::string_view values[2];
    size_t count = 0;
    for (auto it = header.find(bhttp::field::authorization);
         it != header.end() && it->name() == bhttp::field::authorization && count < 2; ++it) {
      values[count++] = absl::string_view(it->value().data(), it->value().size());
    }
    if (!auth_->Accepts(values, count, metrics::Protocol::kHttp)) {
      return ErrorFor(absl::UnauthenticatedError(kUnauthenticatedHttpMessage));
    }
  }
  if (route->kind == Kind::kClassify || route->kind == Kind::kInfer) {
    // An unknown model is refused before its body is read.
    if (auto found = core_->Find(route->model, route->version); !found.ok()) {
      const CallInfo info = HttpCallInfo(header, ApiName(route->kind), peer, 0);
      RequestRecorder(metrics_, core_->clock(), route->model, metrics::Protocol::kHttp, log_, info)
          .Record(absl::StatusCodeToString(found.status().code()));
      auto res = ErrorFor(found.status());
      if (!info.traceparent.empty()) res.set("traceparent", info.traceparent);
      return res;
    }
  }
  return std::nullopt;
}

void HttpService::Handle(std::shared_ptr<http::Request> request, const std::string& peer,
                         http::Responder respond) {
  const auto target = request->target();
  auto route = Match(std::string_view(target.data(), target.size()));
  if (!route) return respond(http::ErrorResponse(http::Status::not_found, "no such endpoint"));
  switch (route->kind) {
    case Kind::kPage: {
      auto res = http::MakeResponse(http::Status::ok, kTryItPage, "text/html; charset=utf-8");
      // The page loads nothing from elsewhere, and may not.
      res.set("Content-Security-Policy",
              "default-src 'self'; script-src 'self' 'unsafe-inline'; "
              "style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
              "connect-src 'self'; frame-ancestors 'none'");
      res.set("X-Content-Type-Options", "nosniff");
      res.set(bhttp::field::cache_control, "no-cache");
      return respond(std::move(res));
    }
    case Kind::kMetrics:
      return respond(Metrics());
    case Kind::kHealthz:
      return respond(http::MakeResponse(http::Status::ok, "ok\n", "text/plain"));
    case Kind::kListModels:
      return respond(ListModels());
    case Kind::kServerMetadata:
      return respond(Json(
          http::Status::ok,
          {{"name", "ghostserve"}, {"version", version_}, {"extensions", ServerExtensions()}}));
    case Kind::kLive:
      return respond(http::MakeResponse(http::Status::ok, "", "text/plain"));
    case Kind::kReady:
      return respond(http::MakeResponse(Ready() ? http::Status::ok : http::Status::bad_request, "",
                                        "text/plain"));
    case Kind::kModelMetadata:
    case Kind::kModelReady: {
      auto found = core_->Find(route->model, route->version);
      if (route->kind == Kind::kModelReady) {
        // As Triton: an unknown model or version is just not ready (400).
        const bool ready = found.ok() && Ready();
        return respond(http::MakeResponse(ready ? http::Status::ok : http::Status::bad_request, "",
                                          "text/plain"));
      }
      if (!found.ok()) return respond(ErrorFor(found.status()));
      inference::ModelMetadataResponse metadata;
      ToModelMetadata(**found, core_->versions(route->model), &metadata);
      return respond(
          http::MakeResponse(http::Status::ok, ToRestMetadata(metadata), "application/json"));
    }
    case Kind::kModelConfig:
    case Kind::kModelStats: {
      inference::ModelStatisticsResponse stats;
      if (route->kind == Kind::kModelStats && route->model.empty()) {
        for (const auto& s : core_->servables()) ToModelStatistics(*s, stats.add_model_stats());
        return respond(
            http::MakeResponse(http::Status::ok, ToRestStatistics(stats), "application/json"));
      }
      auto found = core_->Find(route->model, route->version);
      if (!found.ok()) return respond(ErrorFor(found.status()));
      if (route->kind == Kind::kModelStats) {
        ToModelStatistics(**found, stats.add_model_stats());
        return respond(
            http::MakeResponse(http::Status::ok, ToRestStatistics(stats), "application/json"));
      }
      inference::ModelConfig config;
      ToModelConfig(**found, core_->executor().size(), &config);
      return respond(
          http::MakeResponse(http::Status::ok, ToRestConfig(config), "application/json"));
    }
    case Kind::kRepositoryIndex: {
      // The body may carry {"ready": true}; anything else lists everything.
      bool only_ready = false;
      const json body = json::parse(request->body(), nullptr, /*allow_exceptions=*/false);
      if (body.is_object() && body.contains("ready") && body["ready"].is_boolean()) {
        only_ready = body["ready"].get<bool>();
      }
      inference::RepositoryIndexResponse index;
      ToRepositoryIndex(
          core_->servables(),
          repository_ != nullptr ? repository_->Index() : std::vector<core::ModelVersionState>{},
          Ready(), core_->ready(), only_ready, &index);
      return respond(
          http::MakeResponse(http::Status::ok, ToRestRepositoryIndex(index), "application/json"));
    }
    case Kind::kRepositoryLoad:
    case Kind::kRepositoryUnload: {
      if (repository_ == nullptr) {
        return respond(ErrorFor(absl::FailedPreconditionError(
            "no model repository: start the server with --model-repository DIR "
            "--model-control-mode=explicit")));
      }
      // Triton's body: {"parameters": {...}}; only unload_dependents is
      // accepted (and means nothing here).
      if (!request->body().empty()) {
        const json body = json::parse(request->body(), nullptr, /*allow_exceptions=*/false);
        if (!body.is_object()) {
          return respond(ErrorFor(absl::InvalidArgumentError("body is not a JSON object")));
        }
        if (body.contains("parameters")) {
          const json& p = body["parameters"];
          const bool only_dependents =
              p.is_object() && (p.empty() || (p.size() == 1 && p.contains("unload_dependents")));
          if (!only_dependents) {
            return respond(ErrorFor(absl::InvalidArgumentError(
                "load parameters (Triton's config and file overrides) are not supported: put "
                "the model's files in the repository directory")));
          }
        }
      }
      auto done = [respond = std::move(respond)](absl::Status s) {
        respond(s.ok() ? http::MakeResponse(http::Status::ok, "", "application/json")
                       : ErrorFor(s));
      };
      if (route->kind == Kind::kRepositoryLoad) return repository_->Load(route->model, done);
      return repository_->Unload(route->model, done);
    }
    case Kind::kClassify:
    case Kind::kInfer: {
      // Every answer, error or not, returns the client's traceparent.
      CallInfo info = HttpCallInfo(*request, ApiName(route->kind), peer,
                                   static_cast<int64_t>(request->body().size()));
      respond = EchoTraceparent(info.traceparent, std::move(respond));
      if (route->kind == Kind::kClassify) {
        return Classify(*route, std::move(request), std::move(info), std::move(respond));
      }
      return KServeInfer(*route, std::move(request), std::move(info), std::move(respond));
    }
  }
}

void HttpService::Classify(const Route& route, std::shared_ptr<http::Request> request,
                           CallInfo info, http::Responder respond) {
  RequestRecorder recorder(metrics_, core_->clock(), route.model, metrics::Protocol::kHttp, log_,
                           std::move(info));
  auto fail = [&](const absl::Status& status) {
    recorder.Record(absl::StatusCodeToString(status.code()));
    respond(ErrorFor(status));
  };
  auto call = std::make_shared<v1::ClassifyRequest>();
  call->set_model(route.model);
  if (auto k = QueryParam(route.query, "top_k")) {
    uint32_t top_k = 0;
    if (!absl::SimpleAtoi(*k, &top_k) || top_k == 0) {
      return fail(absl::InvalidArgumentError("top_k must be a positive integer"));
    }
    call->set_top_k(top_k);
  }
  int64_t timeout_us = 0;
  if (auto t = QueryParam(route.query, "timeout_ms")) {
    int64_t ms = 0;
    if (!absl::SimpleAtoi(*t, &ms) || ms <= 0 || ms > int64_t{1} << 40) {
      return fail(absl::InvalidArgumentError("timeout_ms must be a positive integer"));
    }
    timeout_us = ms * 1000;
  }
  if (auto id = request->find("X-Request-Id"); id != request->end()) {
    call->set_request_id(std::string(id->value()));
  }
  const auto content_type = (*request)[bhttp::field::content_type];
  if (absl::StartsWithIgnoreCase(absl::string_view(content_type.data(), content_type.size()),
                                 "multipart/form-data")) {
    auto file = http::FirstFormFile(std::string_view(content_type.data(), content_type.size()),
                                    request->body());
    if (!file.ok()) return fail(file.status());
    call->set_image(std::string(*file));
  } else {
    // Any other type is taken as the encoded image itself: curl's
    // --data-binary sends application/x-www-form-urlencoded by default.
    call->set_image(std::move(request->body()));
  }
  request.reset();  // the image now lives in `call`
  auto infer = FromClassify(*call);
  if (!infer.ok()) return fail(infer.status());
  infer->deadline_us = TimeoutDeadline(*core_->clock(), timeout_us);
  core_->Infer(std::move(*infer),
               [call, recorder, respond = std::move(respond)](absl::StatusOr<core::InferResult> r) {
                 if (!r.ok()) {
                   recorder.Record(absl::StatusCodeToString(r.status().code()));
                   return respond(ErrorFor(r.status()));
                 }
                 auto res = Json(http::Status::ok, ClassifyJson(ToClassify(*call, *r)));
                 recorder.Record("OK", &*r, static_cast<int64_t>(res.body().size()));
                 respond(std::move(res));
               });
}

void HttpService::KServeInfer(const Route& route, std::shared_ptr<http::Request> request,
                              CallInfo info, http::Responder respond) {
  // The request id is the body's "id" once parsed.
  auto recorder_for = [&](std::string id) {
    if (!id.empty()) info.request_id = std::move(id);
    return RequestRecorder(metrics_, core_->clock(), route.model, metrics::Protocol::kHttp, log_,
                           info);
  };
  auto fail = [&](const absl::Status& status) {
    recorder_for("").Record(absl::StatusCodeToString(status.code()));
    respond(ErrorFor(status));
  };
  std::optional<size_t> header_length;
  if (auto h = request->find("Inference-Header-Content-Length"); h != request->end()) {
    size_t n = 0;
    if (!absl::SimpleAtoi(absl::string_view(h->value().data(), h->value().size()), &n)) {
      return fail(absl::InvalidArgumentError(
          "Inference-Header-Content-Length must be a non-negative integer"));
    }
    header_length = n;
  }
  auto parsed = ParseRestInfer(route.model, route.version, request->body(), header_length);
  request.reset();  // parsed holds copies of the inputs
  if (!parsed.ok()) return fail(parsed.status());
  auto rest = std::make_shared<RestInferRequest>(std::move(*parsed));
  const RequestRecorder recorder = recorder_for(rest->proto.id());
  auto call = FromKServe(rest->proto);
  if (!call.ok()) {
    recorder.Record(absl::StatusCodeToString(call.status().code()));
    return respond(ErrorFor(call.status()));
  }
  call->request.deadline_us = TimeoutDeadline(*core_->clock(), call->timeout_us);
  core_->Infer(std::move(call->request),
               [rest, outputs = call->outputs, recorder,
                respond = std::move(respond)](absl::StatusOr<core::InferResult> r) {
                 if (!r.ok()) {
                   recorder.Record(absl::StatusCodeToString(r.status().code()));
                   return respond(ErrorFor(r.status()));
                 }
                 inference::ModelInferResponse response;
                 ToKServe(rest->proto, *r, outputs, &response);
                 RestBody body = ToRestInfer(*rest, response);
                 recorder.Record("OK", &*r, static_cast<int64_t>(body.body.size()));
                 if (!body.json_length) {
                   return respond(http::MakeResponse(http::Status::ok, std::move(body.body),
                                                     "application/json"));
                 }
                 auto res = http::MakeResponse(http::Status::ok, std::move(body.body),
                                               "application/octet-stream");
                 res.set("Inference-Header-Content-Length", std::to_string(*body.json_length));
                 respond(std::move(res));
               });
}

http::Response HttpService::ListModels() const {
  json models = json::array();
  const bool ready = Ready();
  for (const auto& s : core_->servables()) {
    v1::ModelInfo info;
    ToModelInfo(*s, ready, &info);
    models.push_back(ModelJson(info));
  }
  return Json(http::Status::ok, {{"models", std::move(models)}});
}

http::Response HttpService::Metrics() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& c : collectables_) {
    auto f = c->Collect();
    families.insert(families.end(), std::make_move_iterator(f.begin()),
                    std::make_move_iterator(f.end()));
  }
  return http::MakeResponse(http::Status::ok, prometheus::TextSerializer().Serialize(families),
                            "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace ghostserve::service
