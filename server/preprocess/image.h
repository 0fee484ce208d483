// Decoding and preprocessing of encoded images with OpenCV, into the float
// layout GhostNet takes. Links OpenCV and Torch, never gRPC. The Torch-free
// part (limits, headers, PreprocessInto) is declared in image_decode.h.
#ifndef GHOSTSERVE_SERVER_PREPROCESS_IMAGE_H_
#define GHOSTSERVE_SERVER_PREPROCESS_IMAGE_H_

#include <torch/torch.h>

#include <string_view>

#include "absl/status/statusor.h"
#include "server/preprocess/image_decode.h"

namespace ghostserve::preprocess {

// PreprocessInto into a new [C, H, W] tensor whose memory is HWC (so copying
// it into a channels-last batch is one contiguous copy).
absl::StatusOr<torch::Tensor> Preprocess(std::string_view bytes, const PreprocessConfig& config,
                                         const ImageLimits& limits);

}  // namespace ghostserve::preprocess

#endif  // GHOSTSERVE_SERVER_PREPROCESS_IMAGE_H_
