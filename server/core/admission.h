// Admission on arrival: what the core holds for a request is bounded from the
// moment it is accepted, and a request over a bound is refused before any
// work (no decoding) is done for it.
#ifndef GHOSTSERVE_SERVER_CORE_ADMISSION_H_
#define GHOSTSERVE_SERVER_CORE_ADMISSION_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "server/core/servable.h"
#include "server/metrics/metrics.h"

namespace ghostserve::core {

class Admission;

// What one request holds; released once, by Release or on destruction.
// Movable.
class AdmissionTicket {
 public:
  AdmissionTicket() = default;
  AdmissionTicket(AdmissionTicket&& o) noexcept { *this = std::move(o); }
  AdmissionTicket& operator=(AdmissionTicket&& o) noexcept;
  ~AdmissionTicket() { Release(); }
  void Release();

 private:
  friend class Admission;
  Admission* admission_ = nullptr;
  Servable* servable_ = nullptr;
  int images_ = 0;
  int64_t bytes_ = 0;
};

// Two budgets, both counted from acceptance to answer:
//  - per servable, images: waiting for a preprocessing thread, being
//    preprocessed, waiting for a batch, running (Servable::image_budget);
//  - over all servables, bytes of request inputs (encoded images, tensors),
//    which the request messages keep in memory until they are answered.
// Thread-safe. `metrics` (may be null) is borrowed.
class Admission {
 public:
  Admission(int64_t max_bytes, metrics::ServerMetrics* metrics)
      : max_bytes_(max_bytes), metrics_(metrics) {}

  // UNAVAILABLE naming the full budget (and counted as a refusal) when
  // `images` more of `servable` or `bytes` more would exceed a budget.
  absl::StatusOr<AdmissionTicket> Admit(Servable& servable, int images, int64_t bytes);

 private:
  friend class AdmissionTicket;
  void Release(Servable* servable, int images, int64_t bytes);

  const int64_t max_bytes_;
  metrics::ServerMetrics* const metrics_;
  std::atomic<int64_t> held_bytes_{0};
};

}  // namespace ghostserve::core

#endif  // GHOSTSERVE_SERVER_CORE_ADMISSION_H_
