// The limits and the grayscale config the fuzzer drives PreprocessInto with;
// fuzz_corpus_test replays the corpus with the same ones.
#ifndef GHOSTSERVE_TESTS_FUZZ_FUZZ_CONFIGS_H_
#define GHOSTSERVE_TESTS_FUZZ_FUZZ_CONFIGS_H_

#include "server/preprocess/image_decode.h"

namespace ghostserve::fuzz {

// Small enough that no input can make a decode allocate more than a few MB.
inline preprocess::ImageLimits FuzzLimits() {
  preprocess::ImageLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_pixels = 1 << 20;  // 1 MP: 3 MB decoded at most
  limits.max_side = 2048;
  return limits;
}

// A grayscale model's config (Fashion-MNIST-like), with area interpolation:
// the other decode and resize paths.
inline preprocess::PreprocessConfig GrayConfig() {
  preprocess::PreprocessConfig c;
  c.channels = 1;
  c.resize_shorter = 32;
  c.crop_size = 28;
  c.mean = {0.286f};
  c.std = {0.353f};
  c.interpolation = preprocess::Interpolation::kArea;
  return c;
}

}  // namespace ghostserve::fuzz

#endif  // GHOSTSERVE_TESTS_FUZZ_FUZZ_CONFIGS_H_
