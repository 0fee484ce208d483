#include "server/service/classify_conversion.h"

#include "absl/strings/str_cat.h"

namespace ghostserve::service {
namespace {

constexpr size_t kMaxRequestIdBytes = 128;

}  // namespace

absl::StatusOr<core::InferRequest> FromClassify(const v1::ClassifyRequest& request) {
  if (request.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id is longer than ", kMaxRequestIdBytes, " bytes"));
  }
  core::InferRequest infer;
  infer.model = request.model();
  infer.version = request.model_version();
  infer.encoded.push_back(request.image());
  infer.top_k = request.top_k() == 0 ? core::InferRequest::kTopKDefault : request.top_k();
  infer.priority = request.priority() == v1::PRIORITY_HIGH ? 1 : 0;
  return infer;
}

v1::ClassifyResponse ToClassify(const v1::ClassifyRequest& request,
                                const core::InferResult& result) {
  v1::ClassifyResponse response;
  response.set_model(result.model);
  response.set_model_version(result.version);
  response.set_request_id(request.request_id());
  response.set_batch_size(static_cast<uint32_t>(result.batch_size));
  auto* t = response.mutable_timing();
  t->set_preprocess_wait_us(static_cast<uint64_t>(result.timing.preprocess_wait_us));
  t->set_preprocess_us(static_cast<uint64_t>(result.timing.preprocess_us));
  t->set_queue_us(static_cast<uint64_t>(result.timing.queue_us));
  t->set_inference_us(static_cast<uint64_t>(result.timing.inference_us));
  t->set_total_us(static_cast<uint64_t>(result.timing.total_us));
  if (!result.predictions.empty()) {
    for (const auto& p : result.predictions[0]) {
      auto* out = response.add_predictions();
      out->set_class_index(static_cast<uint32_t>(p.class_index));
      out->set_label(p.label);
      out->set_score(p.score);
    }
  }
  return response;
}

void ToModelInfo(const core::Servable& s, bool ready, v1::ModelInfo* info) {
  const core::ModelInfo& m = s.info();
  info->set_name(s.name());
  info->set_version(s.version());
  info->set_parameters(static_cast<uint64_t>(m.parameters));
  info->set_macs(static_cast<uint64_t>(m.macs));
  info->set_width(static_cast<float>(m.width));
  info->set_input_size(static_cast<uint32_t>(s.preprocess().crop_size));
  info->set_input_channels(static_cast<uint32_t>(m.input_channels));
  info->set_num_classes(static_cast<uint32_t>(m.num_classes));
  info->set_weights_source(m.weights_source);
  info->set_trained(m.trained);
  info->set_ready(ready);
  info->set_max_batch_size(static_cast<uint32_t>(s.max_batch_size()));
  info->set_precision(m.precision);
  auto* p = info->mutable_preprocess();
  p->set_resize_shorter_side(static_cast<uint32_t>(s.preprocess().resize_shorter));
  p->set_input_size(static_cast<uint32_t>(s.preprocess().crop_size));
  for (float v : s.preprocess().mean) p->add_mean(v);
  for (float v : s.preprocess().std) p->add_std(v);
  p->set_color(s.preprocess().channels == 3 ? "rgb" : "gray");
}

}  // namespace ghostserve::service
