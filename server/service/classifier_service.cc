#include "server/service/classifier_service.h"

#include <chrono>
#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/service/classify_conversion.h"
#include "server/service/request_recorder.h"
#include "server/service/status_map.h"

namespace ghostserve::service {
namespace {

using ghostserve::v1::ClassifyRequest;
using ghostserve::v1::ClassifyResponse;

// Requests of one stream being worked on at once; more are not read until
// earlier ones are answered (flow control back to the client).
constexpr int kStreamWindow = 32;

}  // namespace

int64_t DeadlineOnClock(const grpc::CallbackServerContext& ctx, const batcher::Clock& clock) {
  const auto deadline = ctx.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline >= now + std::chrono::hours(24 * 365)) return 0;  // no deadline
  const int64_t left_us =
      std::chrono::duration_cast<std::chrono::microseconds>(deadline - now).count();
  return clock.NowMicros() + std::max<int64_t>(left_us, 1);
}

void ClassifierService::RunClassify(const ClassifyRequest* request, int64_t deadline_us,
                                    std::function<bool()> is_cancelled, CallInfo info,
                                    std::function<void(grpc::Status, ClassifyResponse)> done) {
  if (log_ != nullptr) {
    info.request_id = request->request_id();
    info.bytes_in = static_cast<int64_t>(request->ByteSizeLong());
  }
  auto finish = [recorder = RequestRecorder(metrics_, core_->clock(), request->model(),
                                            metrics::Protocol::kGrpc, log_, std::move(info)),
                 done = std::move(done)](grpc::Status status, ClassifyResponse response,
                                         const core::InferResult* result) {
    recorder.Record(status, result, result != nullptr ? &response : nullptr);
    done(std::move(status), std::move(response));
  };
  auto infer = FromClassify(*request);
  if (!infer.ok()) return finish(ToGrpcStatus(infer.status()), {}, nullptr);
  infer->deadline_us = deadline_us;
  infer->is_cancelled = std::move(is_cancelled);
  core_->Infer(std::move(*infer), [request, finish](absl::StatusOr<core::InferResult> r) {
    if (!r.ok()) return finish(ToGrpcStatus(r.status()), {}, nullptr);
    finish(grpc::Status::OK, ToClassify(*request, *r), &*r);
  });
}

grpc::ServerUnaryReactor* ClassifierService::Classify(grpc::CallbackServerContext* ctx,
                                                      const ClassifyRequest* request,
                                                      ClassifyResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  // The context outlives the call: OnDone follows Finish.
  RunClassify(
      request, DeadlineOnClock(*ctx, *core_->clock()), [ctx] { return ctx->IsCancelled(); },
      GrpcCallInfo(ctx, "classifier.Classify", log_),
      [reactor, response](grpc::Status status, ClassifyResponse r) {
        if (status.ok()) *response = std::move(r);
        reactor->Finish(status);
      });
  return reactor;
}

namespace {

// Pipelines up to kStreamWindow requests of one stream through the core and
// writes the answers in request order. Deletes itself once gRPC is done with
// it and no classification still refers to it.
class StreamReactor : public grpc::ServerBidiReactor<ClassifyRequest, ClassifyResponse> {
 public:
  StreamReactor(ClassifierService* service, core::InferenceCore* core,
                grpc::CallbackServerContext* ctx)
      : service_(service),
        core_(core),
        ctx_(ctx),
        call_info_(GrpcCallInfo(ctx, "classifier.ClassifyStream", service->access_log())) {
    reading_ = true;
    StartRead(&read_buf_);
  }

  void OnReadDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    reading_ = false;
    if (!ok || finishing_) {
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    const int64_t seq = next_seq_++;
    auto request = std::make_shared<ClassifyRequest>(std::move(read_buf_));
    read_buf_.Clear();
    ++in_flight_;
    if (in_flight_ < kStreamWindow) {
      reading_ = true;
      StartRead(&read_buf_);
    }
    lock.unlock();
    // Requests still in the core may outlive the context (the stream can end
    // early), so they poll a flag this reactor owns jointly with them.
    service_->RunClassify(
        request.get(), DeadlineOnClock(*ctx_, *core_->clock()),
        [gone = gone_] { return gone->load(); }, call_info_,
        [this, seq, request](grpc::Status status, ClassifyResponse response) {
          OnResult(seq, std::move(status), std::move(response));
        });
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      // The client went away; stop writing and finish once work drains.
      finishing_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed");
    }
    ResumeReadLocked();
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnDone() override {
    std::unique_lock<std::mutex> lock(mu_);
    done_ = true;
    gone_->store(true);
    if (in_flight_ == 0) {
      lock.unlock();
      delete this;
    }
  }

 private:
  void OnResult(int64_t seq, grpc::Status status, ClassifyResponse response) {
    std::unique_lock<std::mutex> lock(mu_);
    --in_flight_;
    if (done_) {
      if (in_flight_ == 0) {
        lock.unlock();
        delete this;
      }
      return;
    }
    results_.emplace(seq, std::make_pair(std::move(status), std::move(response)));
    ResumeReadLocked();
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void ResumeReadLocked() {
    if (!reading_ && !reads_done_ && !finishing_ && in_flight_ < kStreamWindow) {
      reading_ = true;
      StartRead(&read_buf_);
    }
  }

  void WriteNextLocked() {
    if (writing_ || finishing_) return;
    auto it = results_.find(next_write_);
    if (it == results_.end()) return;
    if (!it->second.first.ok()) {
      // A failed request ends the stream with its status.
      finishing_ = true;
      final_status_ = it->second.first;
      results_.clear();
      return;
    }
    write_buf_ = std::move(it->second.second);
    results_.erase(it);
    ++next_write_;
    writing_ = true;
    StartWrite(&write_buf_);
  }

  void MaybeFinishLocked() {
    if (finished_ || writing_) return;
    const bool drained = reads_done_ && in_flight_ == 0 && results_.empty();
    if (drained || (finishing_ && !reading_)) {
      finished_ = true;
      Finish(finishing_ ? final_status_ : grpc::Status::OK);
    } else if (finishing_ && reading_) {
      // Finish now; gRPC completes the outstanding read with ok=false.
      finished_ = true;
      Finish(final_status_);
    }
  }

  ClassifierService* const service_;
  core::InferenceCore* const core_;
  grpc::CallbackServerContext* const ctx_;
  const CallInfo call_info_;  // the stream's peer and traceparent
  std::shared_ptr<std::atomic<bool>> gone_ = std::make_shared<std::atomic<bool>>(false);
  std::mutex mu_;
  ClassifyRequest read_buf_;
  ClassifyResponse write_buf_;
  std::map<int64_t, std::pair<grpc::Status, ClassifyResponse>> results_;
  int64_t next_seq_ = 0;
  int64_t next_write_ = 0;
  int in_flight_ = 0;
  bool reading_ = false;
  bool reads_done_ = false;
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool done_ = false;
  grpc::Status final_status_;
};

}  // namespace

grpc::ServerBidiReactor<ClassifyRequest, ClassifyResponse>* ClassifierService::ClassifyStream(
    grpc::CallbackServerContext* ctx) {
  if (auth_ != nullptr) {
    if (grpc::Status status = auth_->Check(*ctx); !status.ok()) {
      return new RefusedBidiReactor<ClassifyRequest, ClassifyResponse>(std::move(status));
    }
  }
  return new StreamReactor(this, core_, ctx);
}

grpc::ServerUnaryReactor* ClassifierService::ListModels(
    grpc::CallbackServerContext* ctx, const ghostserve::v1::ListModelsRequest*,
    ghostserve::v1::ListModelsResponse* response) {
  if (auto* refused = RefuseUnauthenticated(auth_, ctx)) return refused;
  for (const auto& s : core_->servables()) ToModelInfo(*s, core_->ready(), response->add_models());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ghostserve::service
