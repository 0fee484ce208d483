// Labelled image datasets for ghostserve-train, preprocessed once into
// memory by the server's own preprocessing (server/preprocess), so a model
// sees in training exactly what it sees when served.
#ifndef GHOSTSERVE_TOOLS_TRAIN_DATASET_H_
#define GHOSTSERVE_TOOLS_TRAIN_DATASET_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/preprocess/image.h"

namespace ghostserve::train {

struct Dataset {
  torch::Tensor images;  // [N, C, S, S] float32, normalised
  torch::Tensor labels;  // [N] int64
  std::vector<std::string> classes;
  int64_t size() const { return labels.numel(); }
};

// Reads an IDX file (the MNIST format: magic, dimensions, big-endian; uint8
// data), gzip-compressed or not. Returns a uint8 tensor of the declared
// dimensions. InvalidArgument on a malformed or truncated file.
absl::StatusOr<torch::Tensor> ReadIdx(const std::string& path);

// Finds "<prefix>-images-idx3-ubyte[.gz]" and "<prefix>-labels-idx1-ubyte[.gz]"
// in `dir` (prefix "train" or "t10k", the MNIST / Fashion-MNIST names).
absl::StatusOr<std::pair<std::string, std::string>> FindIdxPair(const std::string& dir,
                                                                const std::string& prefix);

// Raw uint8 images [N, H, W] and int64 labels [N] from an IDX pair.
struct RawIdx {
  torch::Tensor images;
  torch::Tensor labels;
};
absl::StatusOr<RawIdx> ReadIdxPair(const std::string& images_path, const std::string& labels_path);

// Preprocesses raw grayscale images [N, H, W] with `config` (channels 1).
absl::StatusOr<torch::Tensor> PreprocessRaw(const torch::Tensor& raw,
                                            const preprocess::PreprocessConfig& config);

// Per-channel mean and standard deviation of pixel / 255 over raw uint8
// images [N, H, W].
std::pair<float, float> PixelStats(const torch::Tensor& raw);

// An ImageFolder tree: root/<class>/<image>.{jpg,jpeg,png}, classes sorted by
// name (torchvision's convention) unless `classes` gives the order. Images
// are decoded and preprocessed with `config`; an unreadable image is an
// error naming the file.
absl::StatusOr<Dataset> LoadImageFolder(const std::string& root,
                                        const preprocess::PreprocessConfig& config,
                                        std::vector<std::string> classes = {});

// `n` distinct indices of [0, total), drawn at random from `seed` (all of
// them, in random order, when n >= total). The same arguments give the same
// indices with any standard library: std::mt19937_64's sequence is fixed by
// the standard and no library distribution is used.
std::vector<int64_t> SampleIndices(int64_t total, int64_t n, uint64_t seed);

// A seeded random subset of a dataset's training images (for an int8
// calibration): of the train-* IDX files in `dir`, or else of the ImageFolder
// tree `dir`/train. Only the chosen images are decoded, and they are
// preprocessed with `config` as evaluation and serving do.
struct ImageSample {
  torch::Tensor images;  // [n, C, S, S] float32, normalised
  // Where they came from, e.g. "idx:/data/fashion-mnist train, 512 images, seed 0".
  std::string description;
};
absl::StatusOr<ImageSample> SampleTrainingImages(const std::string& dir,
                                                 const preprocess::PreprocessConfig& config,
                                                 int64_t n, uint64_t seed);

}  // namespace ghostserve::train

#endif  // GHOSTSERVE_TOOLS_TRAIN_DATASET_H_
