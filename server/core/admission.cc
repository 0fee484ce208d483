#include "server/core/admission.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ghostserve::core {

AdmissionTicket& AdmissionTicket::operator=(AdmissionTicket&& o) noexcept {
  if (this != &o) {
    Release();
    admission_ = std::exchange(o.admission_, nullptr);
    servable_ = o.servable_;
    images_ = o.images_;
    bytes_ = o.bytes_;
  }
  return *this;
}

void AdmissionTicket::Release() {
  if (admission_ == nullptr) return;
  std::exchange(admission_, nullptr)->Release(servable_, images_, bytes_);
}

absl::StatusOr<AdmissionTicket> Admission::Admit(Servable& servable, int images, int64_t bytes) {
  int64_t held = held_bytes_.load();
  do {
    if (held + bytes > max_bytes_) {
      if (metrics_ != nullptr) metrics_->CountRefusal(servable.name(), "byte_budget");
      return absl::UnavailableError(absl::StrCat(
          "server holds ", held, " bytes of request inputs; ", bytes, " more would exceed its ",
          max_bytes_, "-byte budget (--max-input-bytes); retry later"));
    }
  } while (!held_bytes_.compare_exchange_weak(held, held + bytes));
  if (!servable.TryAdmit(images)) {
    held_bytes_.fetch_sub(bytes);
    if (metrics_ != nullptr) metrics_->CountRefusal(servable.name(), "model_budget");
    return absl::UnavailableError(absl::StrCat("model ", servable.name(), " queue is full (",
                                               servable.admitted(),
                                               " images accepted and not yet answered, budget ",
                                               servable.image_budget(), "); retry later"));
  }
  if (metrics_ != nullptr) metrics_->held_bytes()->Increment(static_cast<double>(bytes));
  AdmissionTicket t;
  t.admission_ = this;
  t.servable_ = &servable;
  t.images_ = images;
  t.bytes_ = bytes;
  return t;
}

void Admission::Release(Servable* servable, int images, int64_t bytes) {
  servable->Unadmit(images);
  held_bytes_.fetch_sub(bytes);
  if (metrics_ != nullptr) metrics_->held_bytes()->Decrement(static_cast<double>(bytes));
}

}  // namespace ghostserve::core
