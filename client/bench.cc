#include "client/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/http_client.h"
#include "ghostserve/v1/classifier.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace ghostserve::client {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = ::ghostserve::v1;

constexpr int kMaxDefaultChannels = 4;

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The server's own figures from one successful call.
struct ServerFigures {
  double preprocess_wait_us = 0;
  double preprocess_us = 0;
  double queue_us = 0;
  double inference_us = 0;
  double total_us = 0;
  double batch_size = 0;
};

// The phases of a run and the outcomes counted in them, shared by the gRPC
// and the HTTP bench. Not thread-safe: each bench guards its Tally with its
// own mutex.
class Tally {
 public:
  void Start(const BenchOptions& options, Clock::time_point start) {
    start_ = start;
    measure_start_ = start + Seconds(options.warmup_s);
    measure_end_ = measure_start_ + Seconds(options.duration_s);
  }
  Clock::time_point start() const { return start_; }
  Clock::time_point measure_end() const { return measure_end_; }
  int64_t outcomes() const { return outcomes_; }

  // A call completed at `at` (latency from `start`) or, with `code`
  // "client_overload", a scheduled call was not sent. Counts in the phase
  // `at` falls in.
  void Success(Clock::time_point at, Clock::time_point start, const ServerFigures& f) {
    if (!Count(at, true)) return;
    ++result_.successes;
    latencies_ms_.push_back(Millis(at - start));
    result_.server_preprocess_wait_us += f.preprocess_wait_us;
    result_.server_preprocess_us += f.preprocess_us;
    result_.server_queue_us += f.queue_us;
    result_.server_inference_us += f.inference_us;
    result_.server_total_us += f.total_us;
    result_.batch_size += f.batch_size;
  }
  void Failure(Clock::time_point at, const std::string& code, const std::string& message) {
    if (!Count(at, false)) return;
    ++result_.errors;
    if (result_.errors_by_code[code]++ == 0) result_.error_examples[code] = message;
  }

  BenchProgress Progress(Clock::time_point now, double rate) const {
    BenchProgress p;
    p.elapsed_s = std::chrono::duration<double>(now - start_).count();
    p.warming_up = now < measure_start_;
    p.requests = p.warming_up ? warmup_requests_ : result_.requests;
    p.errors = p.warming_up ? warmup_errors_ : result_.errors;
    p.requests_per_second = rate;
    return p;
  }

  // The measured window's summary; call once, after the last outcome.
  BenchResult Finish(const BenchOptions& options) {
    BenchResult result = result_;
    result.measured_s = options.duration_s;
    result.images_per_second = result.successes / options.duration_s;
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

 private:
  // True when the outcome belongs to the measured window (then counted as
  // a request there); warm-up outcomes only feed the progress line.
  bool Count(Clock::time_point at, bool ok) {
    ++outcomes_;
    if (at < measure_start_) {
      ++warmup_requests_;
      if (!ok) ++warmup_errors_;
      return false;
    }
    if (at >= measure_end_) return false;
    ++result_.requests;
    return true;
  }

  Clock::time_point start_;
  Clock::time_point measure_start_;
  Clock::time_point measure_end_;
  // Every outcome, any phase: the progress line's rate comes from it.
  int64_t outcomes_ = 0;
  int64_t warmup_requests_ = 0;
  int64_t warmup_errors_ = 0;
  BenchResult result_;
  std::vector<double> latencies_ms_;
};

// Blocks until the end of the measured window, calling options.on_progress
// about once a second. `mu` guards `tally`.
void WaitForWindowEnd(const BenchOptions& options, std::mutex& mu, const Tally& tally) {
  Clock::time_point last_tick = tally.start();
  const Clock::time_point end = tally.measure_end();
  int64_t last_outcomes = 0;
  while (true) {
    const Clock::time_point next_tick = last_tick + std::chrono::seconds(1);
    std::this_thread::sleep_until(std::min(next_tick, end));
    const Clock::time_point now = Clock::now();
    if (now >= end) return;
    if (now < next_tick || !options.on_progress) continue;
    BenchProgress progress;
    {
      std::lock_guard<std::mutex> lock(mu);
      const double rate = (tally.outcomes() - last_outcomes) /
                          std::chrono::duration<double>(now - last_tick).count();
      progress = tally.Progress(now, rate);
      last_outcomes = tally.outcomes();
    }
    last_tick = now;
    options.on_progress(progress);
  }
}

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

  const BenchOptions options_;
  std::vector<pb::ClassifyRequest> requests_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<pb::Classifier::Stub>> stubs_;
  std::vector<std::unique_ptr<Slot>> slots_;
  // Copies of tally_'s, readable without mu_ (set before any call starts).
  Clock::time_point start_;
  Clock::time_point measure_end_;

  mutable std::mutex mu_;
  // Signalled when in_flight_ drops to zero.
  std::condition_variable idle_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Slot*> free_slots_ ABSL_GUARDED_BY(mu_);
  size_t next_request_ ABSL_GUARDED_BY(mu_) = 0;
  Tally tally_ ABSL_GUARDED_BY(mu_);
  int channel_count_ = 0;

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
  channel_count_ = channels;
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
  // A skipped open-loop send never became a call, so it has no slot.
  if (slot == nullptr) {
    tally_.Failure(at, "client_overload", status.error_message());
  } else if (status.ok()) {
    const pb::ClassifyResponse& r = slot->response;
    ServerFigures f;
    f.preprocess_wait_us = r.timing().preprocess_wait_us();
    f.preprocess_us = r.timing().preprocess_us();
    f.queue_us = r.timing().queue_us();
    f.inference_us = r.timing().inference_us();
    f.total_us = r.timing().total_us();
    f.batch_size = r.batch_size();
    tally_.Success(at, slot->start, f);
  } else {
    tally_.Failure(at, StatusCodeName(status.error_code()), status.error_message());
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

BenchResult Bench::Run() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tally_.Start(options_, Clock::now());
    start_ = tally_.start();
    measure_end_ = tally_.measure_end();
  }
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

  WaitForWindowEnd(options_, mu_, tally_);

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

  BenchResult result = tally_.Finish(options_);
  result.protocol = "grpc";
  result.channels = channel_count_;
  return result;
}

// A number from a JSON object, 0 when absent or not a number.
double JsonNumber(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return 0;
  const auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : 0;
}

// One benchmark run over HTTP. Each worker thread owns one keep-alive
// connection (HttpClient) and has at most one request on it. Closed loop:
// every worker sends its next request as soon as the last one completed.
// Open loop: dispatcher_ queues each scheduled send for an idle worker, or
// counts it as client_overload when none is idle.
class HttpBench {
 public:
  HttpBench(const BenchOptions& options, const HttpTarget& target, const std::string& authorization,
            std::shared_ptr<const HttpTls> tls, const std::vector<std::string>& images);
  ~HttpBench();

  BenchResult Run();

 private:
  struct Worker {
    std::unique_ptr<HttpClient> client;
    std::thread thread;
    // Guarded by mu_: tells the end of the run which requests to abort.
    bool in_flight = false;
  };

  // Body of a worker's thread: sends until the window ends.
  void Work(Worker& worker);
  // Counts the outcome of one request that started at `start`.
  void Record(Clock::time_point at, Clock::time_point start,
              const absl::StatusOr<HttpResponse>& response);
  // Open-loop body of dispatcher_.
  void Dispatch();

  const BenchOptions options_;
  const std::vector<std::string>& images_;
  std::vector<const char*> content_types_;
  const std::string path_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // Copies of tally_'s, readable without mu_ (set before any worker starts).
  Clock::time_point start_;
  Clock::time_point measure_end_;

  std::mutex mu_;
  // Open loop: signalled when a scheduled send is queued, and at the end.
  std::condition_variable work_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  size_t next_image_ ABSL_GUARDED_BY(mu_) = 0;
  // Open loop: workers not busy with a request and not yet given one.
  int idle_ ABSL_GUARDED_BY(mu_) = 0;
  // Open loop: scheduled send times not yet taken by a worker.
  std::deque<Clock::time_point> scheduled_ ABSL_GUARDED_BY(mu_);
  Tally tally_ ABSL_GUARDED_BY(mu_);

  std::thread dispatcher_;
};

HttpBench::HttpBench(const BenchOptions& options, const HttpTarget& target,
                     const std::string& authorization, std::shared_ptr<const HttpTls> tls,
                     const std::vector<std::string>& images)
    : options_(options), images_(images), path_(ClassifyPath(options.model, options.top_k)) {
  for (const std::string& image : images_) content_types_.push_back(ImageContentType(image));
  for (int i = 0; i < options_.concurrency; ++i) {
    workers_.push_back(std::make_unique<Worker>());
    workers_.back()->client = std::make_unique<HttpClient>(target, authorization, tls);
  }
  std::lock_guard<std::mutex> lock(mu_);
  idle_ = options_.concurrency;
}

HttpBench::~HttpBench() {
  if (dispatcher_.joinable()) dispatcher_.join();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
  }
}

void HttpBench::Record(Clock::time_point at, Clock::time_point start,
                       const absl::StatusOr<HttpResponse>& response) {
  std::string code;
  std::string message;
  ServerFigures figures;
  if (!response.ok()) {
    code = absl::StatusCodeToString(response.status().code());
    message = std::string(response.status().message());
  } else {
    // Parsed outside mu_: the workers' JSON work runs in parallel.
    const nlohmann::json body = nlohmann::json::parse(response->body, nullptr, false);
    if (response->status == 200 && body.is_object()) {
      const auto timing = body.find("timing");
      if (timing != body.end()) {
        figures.preprocess_wait_us = JsonNumber(*timing, "preprocess_wait_us");
        figures.preprocess_us = JsonNumber(*timing, "preprocess_us");
        figures.queue_us = JsonNumber(*timing, "queue_us");
        figures.inference_us = JsonNumber(*timing, "inference_us");
        figures.total_us = JsonNumber(*timing, "total_us");
      }
      figures.batch_size = JsonNumber(body, "batch_size");
    } else if (response->status == 200) {
      code = "INTERNAL";
      message = "HTTP 200 whose body is not a JSON object";
    } else {
      code = HttpStatusCodeName(response->status);
      // The API's errors are {"error": "..."}; anything else is shown as is.
      const auto error = body.is_object() ? body.find("error") : body.end();
      message =
          absl::StrCat("HTTP ", response->status, ": ",
                       error != body.end() && error->is_string() ? error->get<std::string>()
                                                                 : response->body.substr(0, 200));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (code.empty()) {
    tally_.Success(at, start, figures);
  } else {
    tally_.Failure(at, code, message);
  }
}

void HttpBench::Work(Worker& worker) {
  const bool open_loop = options_.rate > 0;
  const auto timeout = std::chrono::milliseconds(options_.timeout_ms);
  while (true) {
    Clock::time_point start;
    size_t image;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (open_loop) {
        work_cv_.wait(lock, [this] { return stopping_ || !scheduled_.empty(); });
        if (stopping_) return;
        start = scheduled_.front();
        scheduled_.pop_front();
      } else {
        start = Clock::now();
        if (stopping_ || start >= measure_end_) return;
      }
      image = next_image_;
      next_image_ = (next_image_ + 1) % images_.size();
      worker.in_flight = true;
    }
    const absl::StatusOr<HttpResponse> response =
        worker.client->Post(path_, content_types_[image], images_[image], timeout);
    const Clock::time_point now = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      worker.in_flight = false;
      if (open_loop) ++idle_;
    }
    Record(now, start, response);
  }
}

void HttpBench::Dispatch() {
  for (int64_t i = 0;; ++i) {
    const Clock::time_point scheduled = start_ + Seconds(static_cast<double>(i) / options_.rate);
    if (scheduled >= measure_end_) return;
    std::this_thread::sleep_until(scheduled);
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    if (idle_ == 0) {
      tally_.Failure(scheduled, "client_overload", "concurrency limit reached; call not sent");
      continue;
    }
    --idle_;
    scheduled_.push_back(scheduled);
    work_cv_.notify_one();
  }
}

BenchResult HttpBench::Run() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tally_.Start(options_, Clock::now());
    start_ = tally_.start();
    measure_end_ = tally_.measure_end();
  }
  for (auto& worker : workers_) {
    worker->thread = std::thread(&HttpBench::Work, this, std::ref(*worker));
  }
  if (options_.rate > 0) dispatcher_ = std::thread(&HttpBench::Dispatch, this);

  WaitForWindowEnd(options_, mu_, tally_);

  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // Requests still out complete after the window and would not count, so
    // abort them instead of waiting up to a whole timeout.
    for (auto& worker : workers_) {
      if (worker->in_flight) worker->client->Shutdown();
    }
  }
  work_cv_.notify_all();
  if (dispatcher_.joinable()) dispatcher_.join();
  BenchResult result;
  int64_t connects = 0;
  for (auto& worker : workers_) {
    worker->thread.join();
    connects += worker->client->connects();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    result = tally_.Finish(options_);
  }
  result.protocol = "http";
  result.channels = options_.concurrency;
  result.connects = connects;
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
  if (!options.http_target.empty()) {
    absl::StatusOr<HttpTarget> target = ParseHttpTarget(options.http_target);
    if (!target.ok()) return target.status();
    std::shared_ptr<const HttpTls> tls;
    if (connection->tls()) {
      auto made = MakeHttpTls(connection->tls_ca_pem(), connection->tls_cert_pem(),
                              connection->tls_key_pem(), connection->tls_server_name());
      if (!made.ok()) return made.status();
      tls = *std::move(made);
    }
    HttpBench bench(options, *target, connection->authorization(), std::move(tls), images);
    return bench.Run();
  }
  Bench bench(options, *connection, images);
  return bench.Run();
}

}  // namespace ghostserve::client
