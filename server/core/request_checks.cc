#include "server/core/request_checks.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/cost_model.h"

namespace ghostserve::core {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::Status ValidateRequest(const InferRequest& request, const Servable& servable,
                             const CoreOptions& options) {
  const std::string& model = servable.name();
  const int64_t n = request.images();
  if (n <= 0) return absl::InvalidArgumentError("request carries no image");
  if (n > options.max_images_per_request) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request carries ", n, " images; the limit is ", options.max_images_per_request));
  }
  if (request.top_k > servable.num_classes() ||
      (request.top_k < 0 && request.top_k != InferRequest::kTopKDefault)) {
    return absl::InvalidArgumentError(absl::StrCat("top_k ", request.top_k, " exceeds the ",
                                                   servable.num_classes(), " classes of model ",
                                                   model));
  }
  if (request.tensor.data != nullptr) {
    std::vector<int64_t> want = servable.input_shape();
    want.insert(want.begin(), n);
    if (request.tensor.shape != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor has shape ", ShapeString(request.tensor.shape), "; model ", model,
          " takes float [N, ", absl::StrJoin(servable.input_shape(), ", "), "]"));
    }
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < n; ++i) {
    const std::string_view img = request.encoded[static_cast<size_t>(i)];
    if (img.empty()) return absl::InvalidArgumentError(absl::StrCat("image ", i, " is empty"));
    if (img.size() > options.limits.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "image ", i, " is ", img.size(), " bytes; the limit is ", options.limits.max_bytes));
    }
  }
  return absl::OkStatus();
}

int64_t InputBytes(const InferRequest& request) {
  if (request.tensor.data != nullptr) {
    int64_t values = 1;
    for (int64_t d : request.tensor.shape) values *= d;  // validated: fits
    return values * static_cast<int64_t>(sizeof(float));
  }
  int64_t bytes = 0;
  for (std::string_view image : request.encoded) bytes += static_cast<int64_t>(image.size());
  return bytes;
}

absl::Status CheckDeadline(const InferRequest& request, const Servable& servable,
                           const CoreOptions& options, int64_t now_us) {
  if (request.deadline_us == 0) return absl::OkStatus();
  const CostModel& costs = servable.costs();
  const int n = static_cast<int>(request.images());
  // This request's decoding, spread over the preprocessing threads...
  int64_t decode_us = 0;
  for (std::string_view image : request.encoded) {
    decode_us += costs.PreprocessUs(CostModel::FormatOf(image), static_cast<int64_t>(image.size()));
  }
  decode_us /= std::min(n, options.preprocess_threads);
  // ...then the batches of this model ahead of it and its own.
  const int max_batch = servable.max_batch_size();
  const int images = servable.admitted() + n;
  const int64_t batches = (images + max_batch - 1) / max_batch;
  const int64_t infer_us = batches * costs.BatchUs(std::min(images, max_batch)) / options.executors;
  const int64_t left_us = request.deadline_us - now_us;
  if (decode_us + infer_us <= left_us) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("deadline cannot be met: about ", (decode_us + infer_us) / 1000.0,
                   " ms of work for model ", servable.name(), " before this request is answered, ",
                   std::max<int64_t>(left_us, 0) / 1000.0, " ms left"));
}

}  // namespace ghostserve::core
