#include "server/core/core_options.h"

#include "absl/strings/str_cat.h"

namespace ghostserve::core {

absl::Status CoreOptions::Validate() const {
  if (auto s = batching.Validate(); !s.ok()) return s;
  if (preprocess_threads < 1 || preprocess_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess threads must be in [1, 256], got ", preprocess_threads));
  }
  if (preprocess_queue < 1) return absl::InvalidArgumentError("preprocess queue must be >= 1");
  if (executors < 1 || executors > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("inference executors must be in [1, 64], got ", executors));
  }
  if (intra_op_threads < 0 || intra_op_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("inference threads must be in [0, 256], got ", intra_op_threads));
  }
  if (adaptive_threads && intra_op_threads > 1) {
    return absl::InvalidArgumentError(
        "the adaptive thread plan runs executors single-threaded under load; inference threads "
        "must be 0 or 1");
  }
  if (plan_hold_us < 0) return absl::InvalidArgumentError("plan hold must be >= 0");
  if (max_input_bytes < 1) return absl::InvalidArgumentError("max input bytes must be >= 1");
  if (max_images_per_request < 1) {
    return absl::InvalidArgumentError("max images per request must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace ghostserve::core
