#include "server/service/kserve_conversion.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ghostserve::service {
namespace {

// Values in `shape`, or -1 if a dimension is < 1 or the product overflows.
int64_t Elements(const google::protobuf::RepeatedField<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 1 || n > std::numeric_limits<int64_t>::max() / 4 / d) return -1;
    n *= d;
  }
  return shape.empty() ? -1 : n;
}

absl::Status FromFp32(const inference::ModelInferRequest& request, core::InferRequest* out) {
  const auto& input = request.inputs(0);
  const int64_t count = Elements(input.shape());
  if (count < 0) {
    return absl::InvalidArgumentError(
        "FP32 input must have shape [N, C, H, W] with every dimension >= 1");
  }
  if (request.raw_input_contents_size() == 1) {
    const std::string& bytes = request.raw_input_contents(0);
    if (static_cast<int64_t>(bytes.size()) != count * 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw FP32 input holds ", bytes.size(), " bytes, shape needs ", count * 4));
    }
    out->tensor.data = bytes.data();
  } else {
    if (input.contents().fp32_contents_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat("fp32_contents holds ",
                                                     input.contents().fp32_contents_size(),
                                                     " values, shape needs ", count));
    }
    out->tensor.data = input.contents().fp32_contents().data();
  }
  out->tensor.shape.assign(input.shape().begin(), input.shape().end());
  return absl::OkStatus();
}

absl::Status FromBytes(const inference::ModelInferRequest& request, core::InferRequest* out) {
  const auto& input = request.inputs(0);
  // [N], or [N, 1] as Triton's model config (dims [1] after the batch) has it.
  if (input.shape_size() < 1 || input.shape_size() > 2 || input.shape(0) < 1 ||
      (input.shape_size() == 2 && input.shape(1) != 1)) {
    return absl::InvalidArgumentError("BYTES input must have shape [N] or [N, 1] with N >= 1");
  }
  const int64_t n = input.shape(0);
  if (request.raw_input_contents_size() == 1) {
    return SplitRawBytes(request.raw_input_contents(0), n, &out->encoded);
  }
  if (input.contents().bytes_contents_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("bytes_contents holds ",
                                                   input.contents().bytes_contents_size(),
                                                   " elements, shape says ", n));
  }
  for (const auto& b : input.contents().bytes_contents()) out->encoded.push_back(b);
  return absl::OkStatus();
}

void AddOutput(const char* name, int64_t rows, int64_t cols, const float* values,
               inference::ModelInferResponse* response) {
  auto* out = response->add_outputs();
  out->set_name(name);
  out->set_datatype("FP32");
  out->add_shape(rows);
  out->add_shape(cols);
  response->add_raw_output_contents()->assign(reinterpret_cast<const char*>(values),
                                              rows * cols * sizeof(float));
}

// Triton's classification output: BYTES [N, k], each "score:index:label"
// (score printed as %f, as Triton does), serialized as 4-byte little-endian
// lengths followed by the bytes.
void AddClassification(const char* name, const core::InferResult& result, int64_t k,
                       const float* values, inference::ModelInferResponse* response) {
  const int64_t n = result.images(), classes = result.num_classes;
  k = std::min(k, classes);
  auto* out = response->add_outputs();
  out->set_name(name);
  out->set_datatype("BYTES");
  out->add_shape(n);
  out->add_shape(k);
  std::string* raw = response->add_raw_output_contents();
  for (int64_t i = 0; i < n; ++i) {
    const auto& ranked = result.predictions[static_cast<size_t>(i)];
    for (int64_t j = 0; j < k && j < static_cast<int64_t>(ranked.size()); ++j) {
      const core::Prediction& p = ranked[static_cast<size_t>(j)];
      const std::string element =
          absl::StrFormat("%f:%d:%s", values[i * classes + p.class_index], p.class_index, p.label);
      const uint32_t len = static_cast<uint32_t>(element.size());
      raw->append(reinterpret_cast<const char*>(&len), 4);
      raw->append(element);
    }
  }
}

}  // namespace

absl::Status SplitRawBytes(const std::string& raw, int64_t count,
                           std::vector<std::string_view>* out) {
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) return absl::InvalidArgumentError("raw BYTES input is truncated");
    uint32_t len;
    std::memcpy(&len, raw.data() + pos, 4);
    pos += 4;
    if (len > raw.size() - pos) {
      return absl::InvalidArgumentError("raw BYTES element overruns the input");
    }
    out->emplace_back(raw.data() + pos, len);
    pos += len;
  }
  if (static_cast<int64_t>(out->size()) != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw BYTES input holds ", out->size(), " elements, shape says ", count));
  }
  return absl::OkStatus();
}

void ToModelConfig(const core::Servable& s, int executors, inference::ModelConfig* config) {
  config->set_name(s.name());
  config->set_platform(s.info().platform);
  config->set_backend(s.info().platform.rfind("pytorch", 0) == 0 ? "pytorch" : s.info().platform);
  config->set_max_batch_size(s.max_batch_size());
  auto* images = config->add_input();
  images->set_name("images");
  images->set_data_type(inference::TYPE_STRING);
  images->add_dims(1);
  auto* tensor = config->add_input();
  tensor->set_name("input");
  tensor->set_data_type(inference::TYPE_FP32);
  tensor->set_format(inference::ModelInput::FORMAT_NCHW);
  for (int64_t d : s.input_shape()) tensor->add_dims(d);
  for (const char* name : {"logits", "probabilities"}) {
    auto* out = config->add_output();
    out->set_name(name);
    out->set_data_type(inference::TYPE_FP32);
    out->add_dims(s.num_classes());
  }
  auto* group = config->add_instance_group();
  group->set_name(s.name());
  group->set_count(executors);
  group->set_kind(inference::ModelInstanceGroup::KIND_CPU);
  auto* batching = config->mutable_dynamic_batching();
  batching->set_max_queue_delay_microseconds(
      static_cast<uint64_t>(s.batcher().options().max_delay_us));
  // Triton numbers levels from 1 (highest); requests without one get 2.
  batching->set_priority_levels(2);
  batching->set_default_priority_level(2);
}

const std::vector<std::string>& ServerExtensions() {
  static const std::vector<std::string> kExtensions = {"classification",
                                                       "model_configuration",
                                                       "statistics",
                                                       "model_repository",
                                                       "model_repository(unload_dependents)",
                                                       "binary_tensor_data"};
  return kExtensions;
}

void ToModelStatistics(const core::Servable& s, inference::ModelStatistics* out) {
  const core::ServableStatsSnapshot st = s.stats().Snapshot();
  auto set = [](const core::StatDuration& d, inference::StatisticDuration* to) {
    to->set_count(d.count);
    to->set_ns(d.ns);
  };
  out->set_name(s.name());
  out->set_version(absl::StrCat(s.version()));
  out->set_last_inference(st.last_inference_ms);
  out->set_inference_count(st.inference_count);
  out->set_execution_count(st.execution_count);
  auto* inf = out->mutable_inference_stats();
  set(st.success, inf->mutable_success());
  set(st.fail, inf->mutable_fail());
  set(st.queue, inf->mutable_queue());
  set(st.compute_input, inf->mutable_compute_input());
  set(st.compute_infer, inf->mutable_compute_infer());
  set(st.compute_output, inf->mutable_compute_output());
  for (const auto& [size, b] : st.batches) {
    auto* batch = out->add_batch_stats();
    batch->set_batch_size(size);
    set(b.compute_input, batch->mutable_compute_input());
    set(b.compute_infer, batch->mutable_compute_infer());
    set(b.compute_output, batch->mutable_compute_output());
  }
}

void ToRepositoryIndex(const std::vector<std::shared_ptr<const core::Servable>>& servables,
                       const std::vector<core::ModelVersionState>& repository, bool ready,
                       bool warm, bool only_ready, inference::RepositoryIndexResponse* response) {
  std::set<std::pair<std::string, int64_t>> listed;
  if (!only_ready || ready) {
    for (const auto& s : servables) {
      auto* m = response->add_models();
      m->set_name(s->name());
      m->set_version(absl::StrCat(s->version()));
      m->set_state(ready ? "READY" : "UNAVAILABLE");
      if (!ready) m->set_reason(warm ? "server is draining" : "warming up");
      listed.emplace(s->name(), s->version());
    }
  }
  if (only_ready) return;
  // The repository's models and versions that are not served (loading,
  // failed, unloading or unloaded), as Triton lists them.
  for (const auto& r : repository) {
    if (listed.count({r.name, r.version}) != 0) continue;
    auto* m = response->add_models();
    m->set_name(r.name);
    if (r.version > 0) m->set_version(absl::StrCat(r.version));
    m->set_state(r.state);
    m->set_reason(r.reason);
  }
}

absl::StatusOr<KServeCall> FromKServe(const inference::ModelInferRequest& request) {
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected exactly one input, got ", request.inputs_size()));
  }
  if (request.raw_input_contents_size() > 1) {
    return absl::InvalidArgumentError("more raw_input_contents than inputs");
  }
  KServeCall call;
  if (request.outputs_size() > 0) call.outputs = {false, false};
  for (const auto& o : request.outputs()) {
    int64_t class_count = 0;
    if (auto c = o.parameters().find("classification"); c != o.parameters().end()) {
      if (c->second.parameter_choice_case() != inference::InferParameter::kInt64Param ||
          c->second.int64_param() < 1) {
        return absl::InvalidArgumentError(
            "output parameter 'classification' must be an int64 >= 1 (the class count)");
      }
      class_count = c->second.int64_param();
    }
    if (o.name() == "logits") {
      call.outputs.logits = true;
      call.outputs.logits_class_count = class_count;
    } else if (o.name() == "probabilities") {
      call.outputs.probabilities = true;
      call.outputs.probabilities_class_count = class_count;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown output '", o.name().substr(0, 64),
                                                     "'; outputs are logits, probabilities"));
    }
  }
  const int64_t class_count =
      std::max(call.outputs.logits_class_count, call.outputs.probabilities_class_count);
  // The core ranks the classes (and names them) once for both outputs.
  if (class_count > 0) call.request.top_k = class_count;
  call.request.model = request.model_name();
  call.request.version = request.model_version();
  // Triton's convention: priority 1 is the highest level; 0 (or absent)
  // means the default, here the normal level.
  if (auto p = request.parameters().find("priority"); p != request.parameters().end()) {
    if (p->second.parameter_choice_case() != inference::InferParameter::kInt64Param) {
      return absl::InvalidArgumentError("parameter 'priority' must be an int64");
    }
    const int64_t level = p->second.int64_param();
    call.request.priority = level == 1 ? 1 : 0;
  }
  if (auto t = request.parameters().find("timeout"); t != request.parameters().end()) {
    if (t->second.parameter_choice_case() != inference::InferParameter::kInt64Param ||
        t->second.int64_param() < 0) {
      return absl::InvalidArgumentError(
          "parameter 'timeout' must be a non-negative int64 (microseconds)");
    }
    call.timeout_us = t->second.int64_param();
  }
  const std::string& datatype = request.inputs(0).datatype();
  const std::string& name = request.inputs(0).name();
  if (name != "images" && name != "input") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected inference input '", name.substr(0, 64), "' for model '",
        request.model_name().substr(0, 64),
        "'; inputs are images (BYTES [N], encoded images) and input (FP32 [N,C,H,W])"));
  }
  if ((name == "images") != (datatype == "BYTES") && (datatype == "BYTES" || datatype == "FP32")) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "' must have datatype ",
                                                   name == "images" ? "BYTES" : "FP32", ", got ",
                                                   datatype));
  }
  absl::Status parsed;
  if (datatype == "FP32") {
    parsed = FromFp32(request, &call.request);
  } else if (datatype == "BYTES") {
    parsed = FromBytes(request, &call.request);
  } else {
    parsed = absl::InvalidArgumentError(
        absl::StrCat("input datatype ", datatype.substr(0, 16),
                     " is not supported; use FP32 [N,C,H,W] or BYTES [N]"));
  }
  if (!parsed.ok()) return parsed;
  return call;
}

void ToKServe(const inference::ModelInferRequest& request, const core::InferResult& result,
              const KServeOutputs& outputs, inference::ModelInferResponse* response) {
  response->set_model_name(request.model_name());
  response->set_model_version(absl::StrCat(result.version));
  response->set_id(request.id());
  const int64_t n = result.images(), classes = result.num_classes;
  if (outputs.logits) {
    if (outputs.logits_class_count > 0) {
      AddClassification("logits", result, outputs.logits_class_count, result.logits.data(),
                        response);
    } else {
      AddOutput("logits", n, classes, result.logits.data(), response);
    }
  }
  if (outputs.probabilities) {
    std::vector<float> probs(result.logits.size());
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<double> p = core::Softmax(result.row(i), classes);
      for (int64_t j = 0; j < classes; ++j) probs[i * classes + j] = static_cast<float>(p[j]);
    }
    if (outputs.probabilities_class_count > 0) {
      AddClassification("probabilities", result, outputs.probabilities_class_count, probs.data(),
                        response);
    } else {
      AddOutput("probabilities", n, classes, probs.data(), response);
    }
  }
}

void ToModelMetadata(const core::Servable& s, const std::vector<int64_t>& versions,
                     inference::ModelMetadataResponse* response) {
  response->set_name(s.name());
  for (int64_t v : versions) response->add_versions(absl::StrCat(v));
  response->set_platform(s.info().platform);
  (*response->mutable_parameters())["precision"].set_string_param(s.info().precision);
  auto* images = response->add_inputs();
  images->set_name("images");
  images->set_datatype("BYTES");
  images->add_shape(-1);
  auto* tensor = response->add_inputs();
  tensor->set_name("input");
  tensor->set_datatype("FP32");
  tensor->add_shape(-1);
  for (int64_t d : s.input_shape()) tensor->add_shape(d);
  for (const char* name : {"logits", "probabilities"}) {
    auto* out = response->add_outputs();
    out->set_name(name);
    out->set_datatype("FP32");
    out->add_shape(-1);
    out->add_shape(s.num_classes());
  }
}

}  // namespace ghostserve::service
