#include "tools/train/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ghostserve::train {
namespace {

absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files unchanged too
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) {
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (size_t{4} << 30)) {
      gzclose(f);
      return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 4 GiB"));
    }
  }
  const bool failed = n < 0;
  gzclose(f);
  if (failed) return absl::InvalidArgumentError(absl::StrCat(path, ": corrupt gzip stream"));
  return out;
}

}  // namespace

absl::StatusOr<torch::Tensor> ReadIdx(const std::string& path) {
  auto data = ReadMaybeGzip(path);
  if (!data.ok()) return data.status();
  const auto* p = reinterpret_cast<const unsigned char*>(data->data());
  const size_t n = data->size();
  // Magic: two zero bytes, the type (0x08 = unsigned byte), the rank.
  if (n < 4 || p[0] != 0 || p[1] != 0 || p[2] != 0x08 || p[3] < 1 || p[3] > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not an IDX file of unsigned bytes (bad magic)"));
  }
  const int rank = p[3];
  if (n < 4 + 4 * static_cast<size_t>(rank)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated IDX header"));
  }
  std::vector<int64_t> dims;
  uint64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const unsigned char* d = p + 4 + 4 * i;
    const uint64_t v =
        (uint64_t{d[0]} << 24) | (uint64_t{d[1]} << 16) | (uint64_t{d[2]} << 8) | d[3];
    dims.push_back(static_cast<int64_t>(v));
    count *= v;
    if (count > (uint64_t{1} << 34)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": IDX dimensions too large"));
    }
  }
  const size_t offset = 4 + 4 * static_cast<size_t>(rank);
  if (n - offset != count) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": IDX data holds ", n - offset, " bytes, dimensions need ", count));
  }
  torch::Tensor t = torch::empty(dims, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), p + offset, count);
  return t;
}

absl::StatusOr<std::pair<std::string, std::string>> FindIdxPair(const std::string& dir,
                                                                const std::string& prefix) {
  namespace fs = std::filesystem;
  auto find = [&](const std::string& stem) -> std::string {
    for (const char* ext : {"", ".gz"}) {
      fs::path p = fs::path(dir) / (stem + ext);
      if (fs::exists(p)) return p.string();
    }
    return "";
  };
  std::string images = find(prefix + "-images-idx3-ubyte");
  std::string labels = find(prefix + "-labels-idx1-ubyte");
  if (images.empty() || labels.empty()) {
    return absl::NotFoundError(absl::StrCat("no ", prefix, "-images-idx3-ubyte[.gz] and ", prefix,
                                            "-labels-idx1-ubyte[.gz] in ", dir));
  }
  return std::make_pair(images, labels);
}

absl::StatusOr<RawIdx> ReadIdxPair(const std::string& images_path, const std::string& labels_path) {
  auto images = ReadIdx(images_path);
  if (!images.ok()) return images.status();
  auto labels = ReadIdx(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->dim() != 3 || labels->dim() != 1 || images->size(0) != labels->size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, " and ", labels_path,
                     ": expected images [N, H, W] and labels [N] with the same N"));
  }
  return RawIdx{*images, labels->to(torch::kInt64)};
}

absl::StatusOr<torch::Tensor> PreprocessRaw(const torch::Tensor& raw,
                                            const preprocess::PreprocessConfig& config) {
  if (config.channels != 1) {
    return absl::InvalidArgumentError("IDX images are grayscale: input channels must be 1");
  }
  const int64_t n = raw.size(0), h = raw.size(1), w = raw.size(2), s = config.crop_size;
  // Channels-last storage, as the server's batch slabs: [N, S, S, 1].
  torch::Tensor out = torch::empty({n, s, s, 1});
  torch::Tensor src = raw.contiguous();
  if (auto st = config.Validate(); !st.ok()) return st;
  std::vector<absl::Status> errors(static_cast<size_t>(n));
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const cv::Mat img(static_cast<int>(h), static_cast<int>(w), CV_8UC1,
                        src.data_ptr<uint8_t>() + i * h * w);
      errors[i] = preprocess::PreprocessDecoded(img, config, out.data_ptr<float>() + i * s * s);
    }
  });
  for (const auto& st : errors) {
    if (!st.ok()) return st;
  }
  return out.permute({0, 3, 1, 2}).contiguous();
}

std::pair<float, float> PixelStats(const torch::Tensor& raw) {
  torch::Tensor x = raw.to(torch::kFloat64).div(255.0);
  return {x.mean().item<float>(), x.std().item<float>()};
}

namespace {

// The images of an ImageFolder tree, as (path, class index), classes in
// `*classes` order (sorted names when it arrives empty); nothing is read.
absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> ListImageFolder(
    const std::string& root, std::vector<std::string>* classes_out) {
  namespace fs = std::filesystem;
  std::vector<std::string>& classes = *classes_out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat(root, " is not a directory"));
  }
  if (classes.empty()) {
    for (const auto& e : fs::directory_iterator(root, ec)) {
      if (e.is_directory()) classes.push_back(e.path().filename().string());
    }
    std::sort(classes.begin(), classes.end());
  }
  if (classes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(root, " has no class directories"));
  }
  std::vector<std::pair<std::string, int64_t>> files;
  for (size_t k = 0; k < classes.size(); ++k) {
    const fs::path dir = fs::path(root) / classes[k];
    if (!fs::is_directory(dir, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat(root, " has no directory for class '", classes[k], "'"));
    }
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string ext = absl::AsciiStrToLower(e.path().extension().string());
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png")) {
        names.push_back(e.path().string());
      }
    }
    std::sort(names.begin(), names.end());
    for (auto& n : names) files.emplace_back(std::move(n), static_cast<int64_t>(k));
  }
  if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(root, " holds no images"));
  return files;
}

// Decodes and preprocesses `files` into [N, C, S, S] images and [N] labels;
// an unreadable image is an error naming the file.
absl::StatusOr<std::pair<torch::Tensor, torch::Tensor>> DecodeImageFiles(
    const std::vector<std::pair<std::string, int64_t>>& files,
    const preprocess::PreprocessConfig& config) {
  const int64_t n = static_cast<int64_t>(files.size()), s = config.crop_size, c = config.channels;
  torch::Tensor images = torch::empty({n, s, s, c});
  torch::Tensor labels = torch::empty({n}, torch::kInt64);
  preprocess::ImageLimits limits;
  limits.max_bytes = size_t{256} << 20;
  std::vector<absl::Status> errors(static_cast<size_t>(n));
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::ifstream in(files[i].first, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      errors[i] = preprocess::PreprocessInto(ss.str(), config, limits,
                                             images.data_ptr<float>() + i * s * s * c);
      labels.data_ptr<int64_t>()[i] = files[i].second;
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    if (!errors[i].ok()) {
      return absl::InvalidArgumentError(absl::StrCat(files[i].first, ": ", errors[i].message()));
    }
  }
  return std::make_pair(images.permute({0, 3, 1, 2}).contiguous(), labels);
}

}  // namespace

absl::StatusOr<Dataset> LoadImageFolder(const std::string& root,
                                        const preprocess::PreprocessConfig& config,
                                        std::vector<std::string> classes) {
  auto files = ListImageFolder(root, &classes);
  if (!files.ok()) return files.status();
  auto decoded = DecodeImageFiles(*files, config);
  if (!decoded.ok()) return decoded.status();
  return Dataset{decoded->first, decoded->second, classes};
}

std::vector<int64_t> SampleIndices(int64_t total, int64_t n, uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(std::max<int64_t>(total, 0)));
  for (int64_t i = 0; i < total; ++i) idx[i] = i;
  n = std::clamp<int64_t>(n, 0, total);
  // A partial Fisher-Yates shuffle. The modulo's bias (under 2^-40 for any
  // real dataset) does not matter here; its portability does.
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng() % static_cast<uint64_t>(total - i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<size_t>(n));
  return idx;
}

absl::StatusOr<ImageSample> SampleTrainingImages(const std::string& dir,
                                                 const preprocess::PreprocessConfig& config,
                                                 int64_t n, uint64_t seed) {
  namespace fs = std::filesystem;
  if (n < 1) return absl::InvalidArgumentError("the number of images must be at least 1");
  ImageSample out;
  std::string source;
  if (auto pair = FindIdxPair(dir, "train"); pair.ok()) {
    auto raw = ReadIdxPair(pair->first, pair->second);
    if (!raw.ok()) return raw.status();
    const std::vector<int64_t> idx = SampleIndices(raw->labels.numel(), n, seed);
    const torch::Tensor chosen = raw->images.index_select(
        0, torch::tensor(idx, torch::TensorOptions().dtype(torch::kInt64)));
    auto images = PreprocessRaw(chosen, config);
    if (!images.ok()) return images.status();
    out.images = *images;
    source = absl::StrCat("idx:", dir, " train");
  } else {
    const std::string root = (fs::path(dir) / "train").string();
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
      return absl::NotFoundError(absl::StrCat(
          dir,
          " holds neither IDX training files (train-images-idx3-ubyte[.gz], "
          "train-labels-idx1-ubyte[.gz]) nor an ImageFolder tree with a train/ directory"));
    }
    std::vector<std::string> classes;
    auto files = ListImageFolder(root, &classes);
    if (!files.ok()) return files.status();
    std::vector<std::pair<std::string, int64_t>> chosen;
    for (int64_t i : SampleIndices(static_cast<int64_t>(files->size()), n, seed)) {
      chosen.push_back((*files)[static_cast<size_t>(i)]);
    }
    auto decoded = DecodeImageFiles(chosen, config);
    if (!decoded.ok()) return decoded.status();
    out.images = decoded->first;
    source = absl::StrCat("imagefolder:", root);
  }
  out.description = absl::StrCat(source, ", ", out.images.size(0), " images, seed ", seed);
  return out;
}

}  // namespace ghostserve::train
