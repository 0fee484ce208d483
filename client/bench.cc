#include "client/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "ghostserve/v1/classifier.grpc.pb.h"

namespace ghostserve::client {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = ::ghostserve::v1;

constexpr int kMaxDefaultChannels = 4;

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// State of one call in flight. The closed loop keeps each slot busy all the
// time; the open loop takes a free slot per scheduled call, which is what
// caps the calls in flight at the concurrency.
struct Slot {
  pb::Classifier::Stub* stub = nullptr;
  // A ClientContext serves one call, so each call gets a fresh one.
  std::unique_ptr<grpc::ClientContext> context;
  const pb::ClassifyRequest* request = nullptr;
  pb::ClassifyResponse response;
  // Where latency starts: the send (closed loop) or the schedule (open loop).
  Clock::time_point start;
  // Guarded by Bench::mu_; tells the end of the run which calls to cancel.
  bool in_flight = false;
};

// One benchmark run. Run() may be called once; it returns only when no call
// is in flight any more, so the object can then be destroyed.
class Bench {
 public:
  Bench(const BenchOptions& options, const Connection& connection,
        const std::vector<std::string>& images);
  ~Bench();

  BenchResult Run();

 private:
  // Gives `slot` a fresh context and the next image; marks it in flight.
  void PrepareLocked(Slot& slot, Clock::time_point start) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the call prepared in `slot`. Called without mu_: gRPC may take
  // its own locks, and completions need mu_.
  void Issue(Slot& slot);
  // Completion callback, on a gRPC thread.
  void OnDone(Slot& slot, const grpc::Status& status);
  // Counts one outcome that belongs to the phase `at` falls in.
  void RecordLocked(Clock::time_point at, const grpc::Status& status, const Slot* slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Open-loop body of dispatcher_: sends on schedule until the window ends.
  void Dispatch();
  BenchProgress ProgressLocked(Clock::time_point now, double rate) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BenchOptions options_;
  std::vector<pb::ClassifyRequest> requests_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<pb::Classifier::Stub>> stubs_;
  std::vector<std::unique_ptr<Slot>> slots_;
  Clock::time_point start_;
  Clock::time_point measure_start_;
  Clock::time_point measure_end_;

  mutable std::mutex mu_;
  // Signalled when in_flight_ drops to zero.
  std::condition_variable idle_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Slot*> free_slots_ ABSL_GUARDED_BY(mu_);
  size_t next_request_ ABSL_GUARDED_BY(mu_) = 0;
  // Every outcome, any phase: the progress line's rate comes from it.
  int64_t outcomes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t warmup_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t warmup_errors_ ABSL_GUARDED_BY(mu_) = 0;
  BenchResult result_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);

  std::thread dispatcher_;
};

Bench::Bench(const BenchOptions& options, const Connection& connection,
             const std::vector<std::string>& images)
    : options_(options) {
  requests_.resize(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    requests_[i].set_image(images[i]);
    requests_[i].set_model(options_.model);
    requests_[i].set_top_k(options_.top_k);
  }
  const int channels = options_.channels > 0 ? options_.channels
                                             : std::min(options_.concurrency, kMaxDefaultChannels);
  for (int i = 0; i < channels; ++i) {
    channels_.push_back(connection.MakeChannel(i));
    stubs_.push_back(pb::Classifier::NewStub(channels_.back()));
  }
  for (int i = 0; i < options_.concurrency; ++i) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->stub = stubs_[i % stubs_.size()].get();
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& slot : slots_) free_slots_.push_back(slot.get());
  result_.channels = channels;
}

Bench::~Bench() {
  if (dispatcher_.joinable()) dispatcher_.join();
}

void Bench::PrepareLocked(Slot& slot, Clock::time_point start) {
  slot.context = std::make_unique<grpc::ClientContext>();
  SetTimeout(*slot.context, options_.timeout_ms);
  slot.request = &requests_[next_request_];
  next_request_ = (next_request_ + 1) % requests_.size();
  slot.response.Clear();
  slot.start = start;
  slot.in_flight = true;
  ++in_flight_;
}

void Bench::Issue(Slot& slot) {
  slot.stub->async()->Classify(slot.context.get(), slot.request, &slot.response,
                               [this, &slot](grpc::Status status) { OnDone(slot, status); });
}

void Bench::RecordLocked(Clock::time_point at, const grpc::Status& status, const Slot* slot) {
  ++outcomes_;
  if (at < measure_start_) {
    ++warmup_requests_;
    if (!status.ok()) ++warmup_errors_;
    return;
  }
  if (at >= measure_end_) return;
  ++result_.requests;
  if (status.ok()) {
    ++result_.successes;
    if (slot != nullptr) {
      latencies_ms_.push_back(Millis(at - slot->start));
      const pb::ClassifyResponse& r = slot->response;
      result_.server_preprocess_wait_us += r.timing().preprocess_wait_us();
      result_.server_preprocess_us += r.timing().preprocess_us();
      result_.server_queue_us += r.timing().queue_us();
      result_.server_inference_us += r.timing().inference_us();
      result_.server_total_us += r.timing().total_us();
      result_.batch_size += r.batch_size();
    }
    return;
  }
  ++result_.errors;
  // A skipped open-loop send never became a call, so it has no slot.
  const std::string code =
      slot == nullptr ? std::string("client_overload") : StatusCodeName(status.error_code());
  if (result_.errors_by_code[code]++ == 0) {
    result_.error_examples[code] = status.error_message();
  }
}

void Bench::OnDone(Slot& slot, const grpc::Status& status) {
  const Clock::time_point now = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  RecordLocked(now, status, &slot);
  --in_flight_;
  slot.in_flight = false;
  if (options_.rate > 0) {
    free_slots_.push_back(&slot);
  } else if (!stopping_ && now < measure_end_) {
    PrepareLocked(slot, now);
    lock.unlock();
    Issue(slot);
    return;
  }
  if (in_flight_ == 0) idle_cv_.notify_all();
}

void Bench::Dispatch() {
  const grpc::Status overload(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "concurrency limit reached; call not sent");
  for (int64_t i = 0;; ++i) {
    const Clock::time_point scheduled = start_ + Seconds(static_cast<double>(i) / options_.rate);
    if (scheduled >= measure_end_) return;
    std::this_thread::sleep_until(scheduled);
    Slot* slot = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      if (free_slots_.empty()) {
        RecordLocked(scheduled, overload, nullptr);
        continue;
      }
      slot = free_slots_.back();
      free_slots_.pop_back();
      PrepareLocked(*slot, scheduled);
    }
    Issue(*slot);
  }
}

BenchProgress Bench::ProgressLocked(Clock::time_point now, double rate) const {
  BenchProgress p;
  p.elapsed_s = std::chrono::duration<double>(now - start_).count();
  p.warming_up = now < measure_start_;
  p.requests = p.warming_up ? warmup_requests_ : result_.requests;
  p.errors = p.warming_up ? warmup_errors_ : result_.errors;
  p.requests_per_second = rate;
  return p;
}

BenchResult Bench::Run() {
  start_ = Clock::now();
  measure_start_ = start_ + Seconds(options_.warmup_s);
  measure_end_ = measure_start_ + Seconds(options_.duration_s);
  // Start connecting now rather than on the first call.
  for (auto& channel : channels_) channel->GetState(/*try_to_connect=*/true);

  if (options_.rate > 0) {
    dispatcher_ = std::thread(&Bench::Dispatch, this);
  } else {
    for (auto& slot : slots_) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        PrepareLocked(*slot, Clock::now());
      }
      Issue(*slot);
    }
  }

  Clock::time_point last_tick = start_;
  int64_t last_outcomes = 0;
  while (true) {
    const Clock::time_point next_tick = last_tick + std::chrono::seconds(1);
    std::this_thread::sleep_until(std::min(next_tick, measure_end_));
    const Clock::time_point now = Clock::now();
    if (now >= measure_end_) break;
    if (now < next_tick || !options_.on_progress) continue;
    BenchProgress progress;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const double rate =
          (outcomes_ - last_outcomes) / std::chrono::duration<double>(now - last_tick).count();
      progress = ProgressLocked(now, rate);
      last_outcomes = outcomes_;
    }
    last_tick = now;
    options_.on_progress(progress);
  }

  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  if (dispatcher_.joinable()) dispatcher_.join();
  // Calls still in flight finish after the window and would not count, so
  // cancel them instead of waiting up to a whole timeout.
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& slot : slots_) {
    if (slot->in_flight) slot->context->TryCancel();
  }
  idle_cv_.wait(lock, [this] { return in_flight_ == 0; });

  BenchResult result = result_;
  result.measured_s = options_.duration_s;
  result.images_per_second = result.successes / options_.duration_s;
  if (result.successes > 0) {
    const double n = static_cast<double>(result.successes);
    result.server_preprocess_wait_us /= n;
    result.server_preprocess_us /= n;
    result.server_queue_us /= n;
    result.server_inference_us /= n;
    result.server_total_us /= n;
    result.batch_size /= n;
  }
  result.latency_ms = SummarizeLatencies(std::move(latencies_ms_));
  return result;
}

}  // namespace

LatencySummary SummarizeLatencies(std::vector<double> latencies_ms) {
  LatencySummary s;
  if (latencies_ms.empty()) return s;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const size_t n = latencies_ms.size();
  // Nearest rank: the smallest sample with at least q of all at or below it.
  const auto rank = [&](double q) {
    const auto r = static_cast<size_t>(std::ceil(q * static_cast<double>(n)));
    return latencies_ms[std::clamp<size_t>(r, 1, n) - 1];
  };
  s.count = static_cast<int64_t>(n);
  s.p50 = rank(0.50);
  s.p90 = rank(0.90);
  s.p99 = rank(0.99);
  s.max = latencies_ms.back();
  s.mean = std::accumulate(latencies_ms.begin(), latencies_ms.end(), 0.0) / static_cast<double>(n);
  return s;
}

absl::StatusOr<BenchResult> RunBench(const BenchOptions& options,
                                     const std::vector<std::string>& images) {
  if (images.empty()) return absl::InvalidArgumentError("no images");
  if (options.model.empty()) return absl::InvalidArgumentError("no model");
  if (options.concurrency < 1) {
    return absl::InvalidArgumentError("concurrency must be at least 1");
  }
  if (!(options.duration_s > 0) || !(options.warmup_s >= 0) || !(options.rate >= 0)) {
    return absl::InvalidArgumentError("duration must be positive, warm-up and rate not negative");
  }
  if (options.timeout_ms < 1 || options.channels < 0) {
    return absl::InvalidArgumentError("bad timeout or channel count");
  }
  auto connection = Connection::Create(options.connection);
  if (!connection.ok()) return connection.status();
  Bench bench(options, *connection, images);
  return bench.Run();
}

}  // namespace ghostserve::client
