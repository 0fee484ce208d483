// Load generator for Classifier.Classify, behind `ghostserve-client bench`.
//
// Closed loop (rate == 0): `concurrency` calls are kept in flight; each one
// issues the next as soon as it completes. Open loop (rate > 0): calls are
// issued on a fixed schedule of `rate` per second whatever the server does,
// with at most `concurrency` in flight; a scheduled call that finds that many
// outstanding is not sent and counts as a "client_overload" error. Open-loop
// latency runs from the scheduled send time, not the actual one, so a client
// that falls behind cannot hide server stalls (coordinated omission).
//
// gRPC calls go through gRPC's callback API, spread over several channels
// (one HTTP/2 connection each); no thread is held per call.
//
// With BenchOptions::http_target set, the same images go to the REST API
// instead, POST /v1/models/{model}:classify?top_k=K, under the same loops,
// windows and summaries: one thread and one keep-alive HTTP/1.1 connection
// per call in flight (HTTP/1.1 carries one request at a time), HTTP statuses
// counted under the gRPC code names the API maps them from (HttpStatusCodeName
// in http_client.h), the server's timing read from the response's JSON.
#ifndef GHOSTSERVE_CLIENT_BENCH_H_
#define GHOSTSERVE_CLIENT_BENCH_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/rpc.h"

namespace ghostserve::client {

// A snapshot passed to BenchOptions::on_progress.
struct BenchProgress {
  // Seconds since the run started, warm-up included.
  double elapsed_s = 0;
  bool warming_up = true;
  // Completed calls (successful or not) and failed ones so far in the
  // current phase: the warm-up, then the measured window.
  int64_t requests = 0;
  int64_t errors = 0;
  // Completions per second since the previous snapshot.
  double requests_per_second = 0;
};

struct BenchOptions {
  // Server address, TLS and token. With http_target all but the address
  // apply (TLS makes it HTTPS).
  ConnectionOptions connection;
  // "HOST:PORT" of the server's HTTP listener; when set, calls go there over
  // HTTP/1.1 instead of to connection.server over gRPC.
  std::string http_target;
  std::string model;
  // Predictions asked for per call.
  uint32_t top_k = 5;
  // Calls in flight (closed loop), or the most allowed in flight (open loop).
  int concurrency = 1;
  // Length of the measured window in seconds; it starts after the warm-up.
  double duration_s = 10;
  // Seconds of load before the measured window whose calls are not counted:
  // connections, server thread pools and batch sizes settle meanwhile.
  double warmup_s = 1;
  // Calls per second for the open loop; 0 selects the closed loop.
  double rate = 0;
  // Deadline of each call in milliseconds.
  int64_t timeout_ms = kDefaultTimeoutMs;
  // Channels (connections) the calls are spread over; 0 = min(concurrency, 4).
  int channels = 0;
  // Called on the calling thread of RunBench about once a second; optional.
  std::function<void(const BenchProgress&)> on_progress;
};

// Nearest-rank percentiles of a set of latencies, in milliseconds. All zero
// when there are no samples.
struct LatencySummary {
  int64_t count = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
  double mean = 0;
};
LatencySummary SummarizeLatencies(std::vector<double> latencies_ms);

// What happened in the measured window. A call belongs to the window when it
// completes inside it (open loop: a skipped call, when it was scheduled in it).
struct BenchResult {
  // Completed calls, successful or failed, plus client_overload skips.
  int64_t requests = 0;
  int64_t successes = 0;
  int64_t errors = 0;
  // Failures by gRPC code name ("UNAVAILABLE", ...) and "client_overload";
  // HTTP statuses are counted under the code they map from.
  std::map<std::string, int64_t> errors_by_code;
  // One message per code in errors_by_code, to explain the failures.
  std::map<std::string, std::string> error_examples;
  // The measured window's length, equal to BenchOptions::duration_s.
  double measured_s = 0;
  // Successful calls (one image each) per measured second.
  double images_per_second = 0;
  // Of successful calls only: failures are often instant and would flatter.
  LatencySummary latency_ms;
  // Means over successful calls of the server's own Timing and batch size.
  double server_preprocess_wait_us = 0;
  double server_preprocess_us = 0;
  double server_queue_us = 0;
  double server_inference_us = 0;
  double server_total_us = 0;
  double batch_size = 0;
  // "grpc" or "http".
  std::string protocol;
  // gRPC channels, or HTTP connections (one per call in flight), used.
  int channels = 0;
  // HTTP only: TCP connections opened in the whole run, warm-up included;
  // more than `channels` means the server closed (or broke) keep-alive ones.
  int64_t connects = 0;
};

// Runs one benchmark with `images` (encoded files, used round-robin) and
// blocks for warm-up + duration, then for the cancellation of calls still in
// flight. InvalidArgument for bad options or no images. Failed calls are
// results, not errors of this function.
absl::StatusOr<BenchResult> RunBench(const BenchOptions& options,
                                     const std::vector<std::string>& images);

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_BENCH_H_
