#include "server/service/request_recorder.h"

namespace ghostserve::service {

CallInfo GrpcCallInfo(grpc::CallbackServerContext* ctx, const char* api, const AccessLog* log) {
  CallInfo info;
  info.api = api;
  if (log != nullptr) info.peer = ctx->peer();
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("traceparent"); it != md.end()) {
    if (auto tp = ValidTraceparent(std::string_view(it->second.data(), it->second.size()))) {
      info.traceparent = std::move(*tp);
      ctx->AddInitialMetadata("traceparent", info.traceparent);
    }
  }
  return info;
}

void RequestRecorder::Record(const std::string& code, const core::InferResult* result,
                             int64_t bytes_out) const {
  const int64_t elapsed_us = clock_->NowMicros() - start_us_;
  if (metrics_ != nullptr) metrics_->RecordRequest(model_, protocol_, code, elapsed_us * 1e-6);
  if (log_ == nullptr || !log_->Sampled(code == "OK")) return;
  AccessRecord r;
  r.request_id = info_->request_id;
  r.model = model_;
  r.protocol = metrics::ProtocolName(protocol_);
  r.api = info_->api;
  r.code = code;
  r.bytes_in = info_->bytes_in;
  r.bytes_out = bytes_out;
  r.duration_us = elapsed_us;
  if (result != nullptr) {
    r.version = result->version;
    r.timing = result->timing;
  }
  r.peer = info_->peer;
  r.traceparent = info_->traceparent;
  log_->Write(r);
}

}  // namespace ghostserve::service
