// How the serving core is sized: batching, preprocessing, executors, limits.
#ifndef GHOSTSERVE_SERVER_CORE_CORE_OPTIONS_H_
#define GHOSTSERVE_SERVER_CORE_CORE_OPTIONS_H_

#include "absl/status/status.h"
#include "server/batcher/batcher.h"
#include "server/preprocess/image_decode.h"

namespace ghostserve::core {

struct CoreOptions {
  // Per-model batching; `name` is replaced by the model's name.
  batcher::BatcherOptions batching;
  // Threads decoding and preprocessing images (shared by all models).
  int preprocess_threads = 1;
  // Images waiting for a preprocessing thread; beyond it requests are refused
  // with UNAVAILABLE.
  int preprocess_queue = 512;
  preprocess::ImageLimits limits;
  // Threads running forward passes, shared by all models (see
  // InferenceExecutor). executors * intra_op_threads should not exceed the
  // CPUs, or OpenMP stops spinning and inference slows down.
  int executors = 1;
  // Intra-op (OpenMP) threads per executor; 0 = CPUs available. Applied by
  // the executor thread start function the engine passes to Create.
  int intra_op_threads = 0;
  // The adaptive thread plan (inference_executor.h): `executors` executors
  // that run single-threaded under load, and a lone batch on executor 0 with
  // `executors` threads. intra_op_threads must then be 1.
  bool adaptive_threads = false;
  // Adaptive plan: how long no batch may have waited for an executor before
  // a lone batch gets all threads again.
  int64_t plan_hold_us = 50000;
  // Bytes of request inputs (encoded images, tensors) that accepted requests
  // may hold at once, over all models; beyond it requests are refused with
  // UNAVAILABLE on arrival (admission.h).
  int64_t max_input_bytes = int64_t{256} << 20;
  // Most images one request may carry (KServe batches).
  int max_images_per_request = 64;
  // Warm-up runs every batch size up to the maximum (true) or only the
  // powers of two (false). The planned engine builds a plan per batch size
  // on first use (50-450 ms for GhostNet on 2 cores), so a server warms them
  // all; tests that start many servers skip it and build plans on demand.
  bool warm_every_batch_size = true;

  absl::Status Validate() const;
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_CORE_OPTIONS_H_
