#include "server/batcher/batcher.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ghostserve::batcher {

absl::Status BatcherOptions::Validate() const {
  if (max_batch_size < 1 || max_batch_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch size must be in [1, 1024], got ", max_batch_size));
  }
  if (max_delay_us < 0 || max_delay_us > 10'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch delay must be in [0, 10s], got ", max_delay_us, "us"));
  }
  if (max_queue_size < 1 || max_queue_size > 1'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queue size must be in [1, 1000000], got ", max_queue_size));
  }
  if (num_workers < 1 || num_workers > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch workers must be in [1, 64], got ", num_workers));
  }
  return absl::OkStatus();
}

}  // namespace ghostserve::batcher
