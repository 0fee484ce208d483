#include "server/preprocess/image.h"

namespace ghostserve::preprocess {

absl::StatusOr<torch::Tensor> Preprocess(std::string_view bytes, const PreprocessConfig& config,
                                         const ImageLimits& limits) {
  // Before allocating: torch::empty throws on a negative size.
  if (auto st = config.Validate(); !st.ok()) return st;
  const int64_t s = config.crop_size;
  torch::Tensor hwc = torch::empty({s, s, config.channels});
  if (auto st = PreprocessInto(bytes, config, limits, hwc.data_ptr<float>()); !st.ok()) {
    return st;
  }
  return hwc.permute({2, 0, 1});
}

}  // namespace ghostserve::preprocess
