#include "server/service/kserve_rest.h"

#include <cstring>
#include <stdexcept>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/service/kserve_conversion.h"

namespace ghostserve::service {
namespace {

using nlohmann::json;

// Nesting allowed in a request body: data arrays of a 4-d tensor sit at depth
// 7 or so; anything far deeper is hostile.
constexpr int kMaxDepth = 32;

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

// A JSON parameters object -> the proto's map. Numbers must be integers (the
// v2 protocol's InferParameter has no floating-point choice).
absl::Status ToParameters(const json& params, absl::string_view where,
                          google::protobuf::Map<std::string, inference::InferParameter>* out) {
  if (!params.is_object()) return Invalid(absl::StrCat(where, " 'parameters' must be an object"));
  for (const auto& [key, value] : params.items()) {
    inference::InferParameter p;
    if (value.is_boolean()) {
      p.set_bool_param(value.get<bool>());
    } else if (value.is_number_integer()) {
      p.set_int64_param(value.get<int64_t>());
    } else if (value.is_string()) {
      p.set_string_param(value.get<std::string>());
    } else {
      return Invalid(absl::StrCat(where, " parameter '", key.substr(0, 64),
                                  "' must be a bool, an integer or a string"));
    }
    (*out)[key] = std::move(p);
  }
  return absl::OkStatus();
}

// Appends the numbers of a (possibly nested) data array.
absl::Status FlattenFloats(const json& data, int depth,
                           google::protobuf::RepeatedField<float>* out) {
  if (depth > kMaxDepth) return Invalid("input 'data' is nested too deeply");
  for (const auto& v : data) {
    if (v.is_number()) {
      out->Add(v.get<float>());
    } else if (v.is_array()) {
      if (auto s = FlattenFloats(v, depth + 1, out); !s.ok()) return s;
    } else {
      return Invalid("FP32 input 'data' must hold only numbers");
    }
  }
  return absl::OkStatus();
}

absl::Status FlattenBytes(const json& data, int depth,
                          google::protobuf::RepeatedPtrField<std::string>* out) {
  if (depth > kMaxDepth) return Invalid("input 'data' is nested too deeply");
  for (const auto& v : data) {
    if (v.is_array()) {
      if (auto s = FlattenBytes(v, depth + 1, out); !s.ok()) return s;
      continue;
    }
    const json* text = &v;
    if (v.is_object()) {
      auto it = v.find("b64");
      if (it == v.end()) return Invalid("a BYTES element object must be {\"b64\": \"<base64>\"}");
      text = &*it;
    }
    if (!text->is_string()) {
      return Invalid("BYTES input 'data' must hold base64 strings or {\"b64\": ...} objects");
    }
    if (!absl::Base64Unescape(text->get_ref<const std::string&>(), out->Add())) {
      return Invalid(absl::StrCat("BYTES element ", out->size() - 1, " is not valid base64"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseInput(const json& in, size_t index, std::string_view* binary,
                        inference::ModelInferRequest* request) {
  const std::string where = absl::StrCat("input ", index);
  if (!in.is_object()) return Invalid(absl::StrCat(where, " must be an object"));
  auto* input = request->add_inputs();
  auto name = in.find("name");
  auto shape = in.find("shape");
  auto datatype = in.find("datatype");
  if (name == in.end() || !name->is_string())
    return Invalid(absl::StrCat(where, " needs a 'name'"));
  if (datatype == in.end() || !datatype->is_string()) {
    return Invalid(absl::StrCat(where, " needs a 'datatype'"));
  }
  if (shape == in.end() || !shape->is_array()) {
    return Invalid(absl::StrCat(where, " needs a 'shape' array"));
  }
  input->set_name(name->get<std::string>());
  input->set_datatype(datatype->get<std::string>());
  for (const auto& d : *shape) {
    if (!d.is_number_integer()) return Invalid(absl::StrCat(where, " shape must hold integers"));
    input->add_shape(d.get<int64_t>());
  }
  std::optional<uint64_t> binary_size;
  if (auto p = in.find("parameters"); p != in.end()) {
    if (auto s = ToParameters(*p, where, input->mutable_parameters()); !s.ok()) return s;
    if (auto b = p->find("binary_data_size"); b != p->end()) {
      if (!b->is_number_unsigned()) {
        return Invalid(absl::StrCat(where, " 'binary_data_size' must be a non-negative integer"));
      }
      binary_size = b->get<uint64_t>();
      input->mutable_parameters()->erase("binary_data_size");
    }
  }
  auto data = in.find("data");
  if (binary_size) {
    if (data != in.end()) {
      return Invalid(absl::StrCat(where, " has both 'data' and 'binary_data_size'"));
    }
    if (*binary_size > binary->size()) {
      return Invalid(absl::StrCat(where, " declares ", *binary_size, " binary bytes; only ",
                                  binary->size(), " remain in the body"));
    }
    request->add_raw_input_contents()->assign(binary->data(), *binary_size);
    binary->remove_prefix(*binary_size);
    return absl::OkStatus();
  }
  if (data == in.end() || !data->is_array()) {
    return Invalid(absl::StrCat(where, " needs a 'data' array or a 'binary_data_size' parameter"));
  }
  if (input->datatype() == "FP32")
    return FlattenFloats(*data, 1, input->mutable_contents()->mutable_fp32_contents());
  if (input->datatype() == "BYTES")
    return FlattenBytes(*data, 1, input->mutable_contents()->mutable_bytes_contents());
  // Other datatypes: left for kserve_conversion to refuse with its message.
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RestInferRequest> ParseRestInfer(std::string_view model, std::string_view version,
                                                std::string_view body,
                                                std::optional<size_t> header_length) {
  if (header_length && *header_length > body.size()) {
    return Invalid(absl::StrCat("Inference-Header-Content-Length ", *header_length,
                                " exceeds the body's ", body.size(), " bytes"));
  }
  const std::string_view text = header_length ? body.substr(0, *header_length) : body;
  std::string_view binary = header_length ? body.substr(*header_length) : std::string_view();
  json doc;
  try {
    doc = json::parse(text.begin(), text.end(), [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) throw std::length_error("nested too deeply");
      return true;
    });
  } catch (const json::parse_error& e) {
    return Invalid(absl::StrCat("request body is not valid JSON: ", e.what()));
  } catch (const std::length_error&) {
    return Invalid("request JSON is nested too deeply");
  }
  if (!doc.is_object()) return Invalid("request body must be a JSON object");
  RestInferRequest out;
  auto& proto = out.proto;
  proto.set_model_name(std::string(model));
  proto.set_model_version(std::string(version));
  if (auto id = doc.find("id"); id != doc.end()) {
    if (!id->is_string()) return Invalid("'id' must be a string");
    proto.set_id(id->get<std::string>());
  }
  if (auto p = doc.find("parameters"); p != doc.end()) {
    if (auto s = ToParameters(*p, "request", proto.mutable_parameters()); !s.ok()) return s;
    if (auto b = p->find("binary_data_output"); b != p->end()) {
      if (!b->is_boolean()) return Invalid("'binary_data_output' must be a bool");
      out.all_binary = b->get<bool>();
      proto.mutable_parameters()->erase("binary_data_output");
    }
  }
  auto inputs = doc.find("inputs");
  if (inputs == doc.end() || !inputs->is_array()) return Invalid("request needs an 'inputs' array");
  for (size_t i = 0; i < inputs->size(); ++i) {
    if (auto s = ParseInput((*inputs)[i], i, &binary, &proto); !s.ok()) return s;
  }
  if (!binary.empty()) {
    return Invalid(
        absl::StrCat(binary.size(), " bytes of binary data follow the inputs' binary_data_size"));
  }
  if (auto outputs = doc.find("outputs"); outputs != doc.end()) {
    if (!outputs->is_array()) return Invalid("'outputs' must be an array");
    for (const auto& o : *outputs) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
        return Invalid("each requested output needs a 'name'");
      }
      auto* requested = proto.add_outputs();
      requested->set_name(o["name"].get<std::string>());
      bool binary_out = out.all_binary;
      if (auto p = o.find("parameters"); p != o.end()) {
        if (auto s = ToParameters(*p, "output", requested->mutable_parameters()); !s.ok()) return s;
        if (auto b = p->find("binary_data"); b != p->end()) {
          if (!b->is_boolean()) return Invalid("output 'binary_data' must be a bool");
          binary_out = b->get<bool>();
        }
      }
      out.binary_outputs.push_back(binary_out);
    }
  }
  return out;
}

RestBody ToRestInfer(const RestInferRequest& request,
                     const inference::ModelInferResponse& response) {
  json doc;
  doc["model_name"] = response.model_name();
  doc["model_version"] = response.model_version();
  if (!response.id().empty()) doc["id"] = response.id();
  json outputs = json::array();
  std::string binary;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& o = response.outputs(i);
    bool as_binary = request.all_binary;
    for (int r = 0; r < request.proto.outputs_size(); ++r) {
      if (request.proto.outputs(r).name() == o.name()) as_binary = request.binary_outputs[r];
    }
    const std::string& raw = response.raw_output_contents(i);
    json entry{{"name", o.name()},
               {"datatype", o.datatype()},
               {"shape", std::vector<int64_t>(o.shape().begin(), o.shape().end())}};
    if (as_binary) {
      entry["parameters"] = {{"binary_data_size", raw.size()}};
      binary += raw;
    } else if (o.datatype() == "BYTES") {
      // Length-prefixed elements (the classification extension's strings).
      int64_t count = 1;
      for (int64_t d : o.shape()) count *= d;
      std::vector<std::string_view> elements;
      if (SplitRawBytes(raw, count, &elements).ok()) {
        entry["data"] = std::vector<std::string>(elements.begin(), elements.end());
      }
    } else {
      std::vector<float> values(raw.size() / sizeof(float));
      std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
      entry["data"] = std::move(values);
    }
    outputs.push_back(std::move(entry));
  }
  doc["outputs"] = std::move(outputs);
  RestBody out;
  out.body = doc.dump();
  if (!binary.empty()) {
    out.json_length = out.body.size();
    out.body += binary;
  }
  return out;
}

std::string ToRestMetadata(const inference::ModelMetadataResponse& m) {
  auto tensors = [](const auto& list) {
    json out = json::array();
    for (const auto& t : list) {
      out.push_back({{"name", t.name()},
                     {"datatype", t.datatype()},
                     {"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())}});
    }
    return out;
  };
  json doc{{"name", m.name()},
           {"versions", std::vector<std::string>(m.versions().begin(), m.versions().end())},
           {"platform", m.platform()},
           {"inputs", tensors(m.inputs())},
           {"outputs", tensors(m.outputs())}};
  if (!m.parameters().empty()) {
    json params = json::object();
    for (const auto& [key, p] : m.parameters()) {
      if (p.has_string_param()) params[key] = p.string_param();
      if (p.has_int64_param()) params[key] = p.int64_param();
      if (p.has_bool_param()) params[key] = p.bool_param();
    }
    doc["parameters"] = params;
  }
  return doc.dump();
}

std::string ToRestConfig(const inference::ModelConfig& c) {
  json inputs = json::array(), outputs = json::array(), groups = json::array();
  for (const auto& in : c.input()) {
    inputs.push_back({{"name", in.name()},
                      {"data_type", inference::DataType_Name(in.data_type())},
                      {"format", inference::ModelInput::Format_Name(in.format())},
                      {"dims", std::vector<int64_t>(in.dims().begin(), in.dims().end())}});
  }
  for (const auto& out : c.output()) {
    outputs.push_back({{"name", out.name()},
                       {"data_type", inference::DataType_Name(out.data_type())},
                       {"dims", std::vector<int64_t>(out.dims().begin(), out.dims().end())},
                       {"label_filename", out.label_filename()}});
  }
  for (const auto& g : c.instance_group()) {
    groups.push_back({{"name", g.name()},
                      {"kind", inference::ModelInstanceGroup::Kind_Name(g.kind())},
                      {"count", g.count()}});
  }
  json doc{{"name", c.name()},
           {"platform", c.platform()},
           {"backend", c.backend()},
           {"max_batch_size", c.max_batch_size()},
           {"input", std::move(inputs)},
           {"output", std::move(outputs)},
           {"instance_group", std::move(groups)}};
  if (c.has_dynamic_batching()) {
    const auto& b = c.dynamic_batching();
    doc["dynamic_batching"] = {
        {"preferred_batch_size",
         std::vector<int32_t>(b.preferred_batch_size().begin(), b.preferred_batch_size().end())},
        {"max_queue_delay_microseconds", b.max_queue_delay_microseconds()},
        {"preserve_ordering", b.preserve_ordering()},
        {"priority_levels", b.priority_levels()},
        {"default_priority_level", b.default_priority_level()}};
  }
  return doc.dump();
}

std::string ToRestStatistics(const inference::ModelStatisticsResponse& stats) {
  auto duration = [](const inference::StatisticDuration& d) {
    return json{{"count", d.count()}, {"ns", d.ns()}};
  };
  json models = json::array();
  for (const auto& m : stats.model_stats()) {
    const auto& i = m.inference_stats();
    json batches = json::array();
    for (const auto& b : m.batch_stats()) {
      batches.push_back({{"batch_size", b.batch_size()},
                         {"compute_input", duration(b.compute_input())},
                         {"compute_infer", duration(b.compute_infer())},
                         {"compute_output", duration(b.compute_output())}});
    }
    models.push_back({{"name", m.name()},
                      {"version", m.version()},
                      {"last_inference", m.last_inference()},
                      {"inference_count", m.inference_count()},
                      {"execution_count", m.execution_count()},
                      {"inference_stats",
                       {{"success", duration(i.success())},
                        {"fail", duration(i.fail())},
                        {"queue", duration(i.queue())},
                        {"compute_input", duration(i.compute_input())},
                        {"compute_infer", duration(i.compute_infer())},
                        {"compute_output", duration(i.compute_output())}}},
                      {"batch_stats", std::move(batches)}});
  }
  return json{{"model_stats", std::move(models)}}.dump();
}

std::string ToRestRepositoryIndex(const inference::RepositoryIndexResponse& index) {
  json models = json::array();
  for (const auto& m : index.models()) {
    json entry{{"name", m.name()}, {"version", m.version()}, {"state", m.state()}};
    if (!m.reason().empty()) entry["reason"] = m.reason();
    models.push_back(std::move(entry));
  }
  return models.dump();
}

}  // namespace ghostserve::service
