#include "server/service/kserve_service.h"

#include <cstring>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proto/status_code_name.h"
#include "server/service/classifier_service.h"
#include "server/service/status_map.h"

namespace ghostserve::service {
namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

// Splits a raw BYTES tensor: elements are a uint32 little-endian length
// followed by that many bytes.
absl::StatusOr<std::vector<std::string_view>> SplitRawBytes(const std::string& raw, int64_t count) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) return absl::InvalidArgumentError("raw BYTES input is truncated");
    uint32_t len;
    std::memcpy(&len, raw.data() + pos, 4);
    pos += 4;
    if (len > raw.size() - pos)
      return absl::InvalidArgumentError("raw BYTES element overruns the input");
    out.emplace_back(raw.data() + pos, len);
    pos += len;
  }
  if (static_cast<int64_t>(out.size()) != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw BYTES input holds ", out.size(), " elements, shape says ", count));
  }
  return out;
}

}  // namespace

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* ctx,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_live(true);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* ctx,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_ready(core_->ready() && core_->accepting());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto s = core_->Find(request->name());
  if (!s.ok()) return Done(ctx, ToGrpcStatus(s.status()));
  response->set_ready(core_->ready() && core_->accepting());
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  response->set_name("ghostserve");
  response->set_version(version_);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto found = core_->Find(request->name());
  if (!found.ok()) return Done(ctx, ToGrpcStatus(found.status()));
  const core::Servable* s = *found;
  response->set_name(s->name());
  response->add_versions("1");
  response->set_platform("pytorch_libtorch");
  const auto shape = s->input_shape();
  auto* images = response->add_inputs();
  images->set_name("images");
  images->set_datatype("BYTES");
  images->add_shape(-1);
  auto* tensor = response->add_inputs();
  tensor->set_name("input");
  tensor->set_datatype("FP32");
  tensor->add_shape(-1);
  for (int64_t d : shape) tensor->add_shape(d);
  for (const char* name : {"logits", "probabilities"}) {
    auto* out = response->add_outputs();
    out->set_name(name);
    out->set_datatype("FP32");
    out->add_shape(-1);
    out->add_shape(s->num_classes());
  }
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelInferRequest* request,
                                                    inference::ModelInferResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  auto* reactor = ctx->DefaultReactor();
  const std::string model = request->model_name();
  const int64_t start = core_->clock()->NowMicros();
  auto finish = [this, reactor, model, start](grpc::Status status) {
    if (metrics_ != nullptr) {
      metrics_->CountRequest(model, StatusCodeName(status.error_code()));
      metrics_->ForModel(model)->request_seconds->Observe((core_->clock()->NowMicros() - start) *
                                                          1e-6);
    }
    reactor->Finish(std::move(status));
  };
  auto found = core_->Find(model);
  if (!found.ok()) {
    finish(ToGrpcStatus(found.status()));
    return reactor;
  }
  const core::Servable* s = *found;
  if (!request->model_version().empty() && request->model_version() != "1") {
    finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model ", model, " has only version 1")));
    return reactor;
  }
  if (request->inputs_size() != 1) {
    finish(Invalid(absl::StrCat("expected exactly one input, got ", request->inputs_size())));
    return reactor;
  }
  if (request->raw_input_contents_size() > 1) {
    finish(Invalid("more raw_input_contents than inputs"));
    return reactor;
  }
  bool want_logits = request->outputs_size() == 0, want_probs = request->outputs_size() == 0;
  for (const auto& o : request->outputs()) {
    if (o.name() == "logits") {
      want_logits = true;
    } else if (o.name() == "probabilities") {
      want_probs = true;
    } else {
      finish(Invalid(absl::StrCat("unknown output '", o.name().substr(0, 64),
                                  "'; outputs are logits, probabilities")));
      return reactor;
    }
  }
  const auto& input = request->inputs(0);
  const bool raw = request->raw_input_contents_size() == 1;
  const int max_images = core_->options().max_images_per_request;
  core::InferRequest infer;
  infer.model = model;
  infer.deadline_us = DeadlineOnClock(*ctx, *core_->clock());
  infer.is_cancelled = [ctx] { return ctx->IsCancelled(); };

  if (input.datatype() == "FP32") {
    const auto want = s->input_shape();
    if (input.shape_size() != 4 || input.shape(1) != want[0] || input.shape(2) != want[1] ||
        input.shape(3) != want[2] || input.shape(0) < 1) {
      finish(Invalid(absl::StrCat("FP32 input of model ", model, " must have shape [N, ", want[0],
                                  ", ", want[1], ", ", want[2], "]")));
      return reactor;
    }
    const int64_t n = input.shape(0);
    if (n > max_images) {
      finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("batch of ", n, " exceeds the limit of ", max_images)));
      return reactor;
    }
    const int64_t count = n * want[0] * want[1] * want[2];
    torch::Tensor t = torch::empty({n, want[0], want[1], want[2]});
    if (raw) {
      const std::string& bytes = request->raw_input_contents(0);
      if (static_cast<int64_t>(bytes.size()) != count * 4) {
        finish(Invalid(absl::StrCat("raw FP32 input holds ", bytes.size(), " bytes, shape needs ",
                                    count * 4)));
        return reactor;
      }
      std::memcpy(t.data_ptr<float>(), bytes.data(), bytes.size());
    } else {
      if (input.contents().fp32_contents_size() != count) {
        finish(Invalid(absl::StrCat("fp32_contents holds ", input.contents().fp32_contents_size(),
                                    " values, shape needs ", count)));
        return reactor;
      }
      std::memcpy(t.data_ptr<float>(), input.contents().fp32_contents().data(), count * 4);
    }
    for (int64_t i = 0; i < n; ++i) infer.images.push_back({{}, t[i]});
  } else if (input.datatype() == "BYTES") {
    if (input.shape_size() != 1 || input.shape(0) < 1) {
      finish(Invalid("BYTES input must have shape [N] with N >= 1"));
      return reactor;
    }
    const int64_t n = input.shape(0);
    if (n > max_images) {
      finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("batch of ", n, " exceeds the limit of ", max_images)));
      return reactor;
    }
    if (raw) {
      auto parts = SplitRawBytes(request->raw_input_contents(0), n);
      if (!parts.ok()) {
        finish(ToGrpcStatus(parts.status()));
        return reactor;
      }
      for (auto p : *parts) infer.images.push_back({p, {}});
    } else {
      if (input.contents().bytes_contents_size() != n) {
        finish(Invalid(absl::StrCat("bytes_contents holds ", input.contents().bytes_contents_size(),
                                    " elements, shape says ", n)));
        return reactor;
      }
      for (const auto& b : input.contents().bytes_contents()) infer.images.push_back({b, {}});
    }
  } else {
    finish(Invalid(absl::StrCat("input datatype ", input.datatype().substr(0, 16),
                                " is not supported; use FP32 [N,C,H,W] or BYTES [N]")));
    return reactor;
  }

  core_->Infer(std::move(infer), [request, response, want_logits, want_probs,
                                  finish](absl::StatusOr<core::InferResult> r) {
    if (!r.ok()) {
      finish(ToGrpcStatus(r.status()));
      return;
    }
    response->set_model_name(request->model_name());
    response->set_model_version("1");
    response->set_id(request->id());
    auto add = [response](const char* name, const torch::Tensor& values) {
      torch::Tensor c = values.contiguous();
      auto* out = response->add_outputs();
      out->set_name(name);
      out->set_datatype("FP32");
      out->add_shape(c.size(0));
      out->add_shape(c.size(1));
      response->add_raw_output_contents()->assign(static_cast<const char*>(c.data_ptr()),
                                                  c.numel() * sizeof(float));
    };
    if (want_logits) add("logits", r->logits);
    if (want_probs) add("probabilities", torch::softmax(r->logits, 1));
    finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace ghostserve::service
