// ghostserve-train: trains or fine-tunes a GhostNet of any width and number
// of classes on an ImageFolder tree or IDX files (MNIST / Fashion-MNIST), and
// writes weights (.safetensors) plus the model config the server reads with
// --model-config. `evaluate` measures a model config's top-1 accuracy in
// process, through the same compiled inference path the server runs;
// `calibrate` measures the activation ranges an int8 model needs
// (model/calibration.h) on a random subset of the training images;
// `export` writes IDX images as PNG files for `ghostserve-client eval`.
//
//   ghostserve-train train --data /usr/share/datasets/fashion-mnist
//       --name ghostnet_050_fashion --width 0.5 --input-size 32 --out-dir models
//   ghostserve-train evaluate --model-config models/ghostnet_050_fashion.json
//       --data /usr/share/datasets/fashion-mnist
//   ghostserve-train calibrate --model-config models/ghostnet_050_fashion.json
//       --data /usr/share/datasets/fashion-mnist
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "model/calibration.h"
#include "model/ghostnet.h"
#include "model/loaded_model.h"
#include "model/state_dict.h"
#include "model/threading.h"
#include "server/config/model_config.h"
#include "tools/train/dataset.h"

namespace ghostserve::train {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// One subcommand's flags on CLI11: --flag value / --flag=value, each flag
// declared once with its default and help (--help prints both). A flag whose
// default is "true" or "false" is a switch: "--flag" alone means true, and
// "--flag=false" or "--flag false" set it. Values stay strings; Num and Int
// parse them when read.
class Flags {
 public:
  explicit Flags(const std::string& command) : app_("", "ghostserve-train " + command) {
    app_.set_help_flag("--help", "print this help and exit");
    app_.allow_windows_style_options(false);
  }
  void Define(const std::string& name, const std::string& def, const std::string& help) {
    std::string& value = values_[name];
    value = def;
    if (IsBool(name)) {
      bools_.push_back(name);
      app_.add_option("--" + name, value, help)
          ->default_str(def)
          ->type_name("BOOL")
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    } else {
      app_.add_option("--" + name, value, help)
          ->default_str(def.empty() ? "none" : def)
          ->type_name("VALUE")
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
  }
  absl::Status Parse(const std::vector<std::string>& args) {
    // A bare switch ("--hflip" followed by nothing or another flag) means
    // true; CLI11 options always take a value, so spell it out.
    std::vector<std::string> in;
    for (size_t i = 0; i < args.size(); ++i) {
      in.push_back(args[i]);
      const bool bare_switch =
          args[i].rfind("--", 0) == 0 && args[i].find('=') == std::string::npos &&
          std::find(bools_.begin(), bools_.end(), args[i].substr(2)) != bools_.end();
      if (bare_switch && (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0)) {
        in.push_back("true");
      }
    }
    std::reverse(in.begin(), in.end());  // CLI11 takes the arguments reversed
    try {
      app_.parse(in);
    } catch (const CLI::ParseError& e) {
      return absl::InvalidArgumentError(e.what());
    }
    return absl::OkStatus();
  }
  std::string Str(const std::string& n) const { return values_.at(n); }
  bool Given(const std::string& n) const { return app_.count("--" + n) > 0; }
  double Num(const std::string& n) const {
    double d;
    if (!absl::SimpleAtod(values_.at(n), &d)) {
      std::cerr << "--" << n << " expects a number, got '" << values_.at(n) << "'\n";
      std::exit(2);
    }
    return d;
  }
  int64_t Int(const std::string& n) const {
    int64_t v;
    if (!absl::SimpleAtoi(values_.at(n), &v)) {
      std::cerr << "--" << n << " expects an integer, got '" << values_.at(n) << "'\n";
      std::exit(2);
    }
    return v;
  }
  bool Bool(const std::string& n) const {
    const std::string& v = values_.at(n);
    return v == "true" || v == "1" || v == "yes";
  }
  std::string Help() const { return app_.help(); }

 private:
  bool IsBool(const std::string& n) const {
    return values_.at(n) == "true" || values_.at(n) == "false";
  }
  CLI::App app_;
  std::map<std::string, std::string> values_;  // node-based: option targets stay put
  std::vector<std::string> bools_;
};

// A one-line progress display on stderr: redrawn in place on a terminal,
// a line every 20 s otherwise (logs).
class Progress {
 public:
  explicit Progress(int64_t total_steps) : total_(total_steps), tty_(isatty(2)) {}
  void Update(int epoch, int epochs, int64_t step, int64_t steps, double loss, double acc,
              double images_per_s, int64_t global_step) {
    const double since = Seconds(last_);
    if (step != steps && since < (tty_ ? 0.2 : 20.0)) return;
    last_ = Clock::now();
    const double elapsed = Seconds(start_);
    const double eta = global_step > 0 ? elapsed * (total_ - global_step) / global_step : 0;
    const int width = 24;
    const int filled = static_cast<int>(width * step / std::max<int64_t>(steps, 1));
    std::string bar(filled, '#');
    bar.append(width - filled, '.');
    char line[256];
    std::snprintf(line, sizeof(line),
                  "epoch %d/%d [%s] %lld/%lld loss %.4f acc %.4f %.0f img/s ETA %02d:%02d", epoch,
                  epochs, bar.c_str(), static_cast<long long>(step), static_cast<long long>(steps),
                  loss, acc, images_per_s, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
    if (tty_) {
      std::fprintf(stderr, "\r%s\033[K", line);
    } else {
      std::fprintf(stderr, "%s\n", line);
    }
  }
  void EndEpoch(const std::string& summary) {
    if (tty_) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", summary.c_str());
  }

 private:
  int64_t total_;
  bool tty_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = Clock::now() - std::chrono::hours(1);
};

struct Split {
  torch::Tensor images;  // [N, C, S, S] float
  torch::Tensor labels;  // [N] int64
};

struct Data {
  Split train, val;
  std::vector<std::string> classes;
  preprocess::PreprocessConfig preprocess;
  std::string description;  // what was loaded, for the provenance record
};

std::vector<std::string> SplitList(const std::string& s) {
  std::string text = s;
  if (!s.empty() && s[0] == '@') {  // @file: one entry per line
    std::ifstream in(s.substr(1));
    std::stringstream ss;
    ss << in.rdbuf();
    std::vector<std::string> lines = absl::StrSplit(ss.str(), '\n', absl::SkipWhitespace());
    return lines;
  }
  return absl::StrSplit(text, ',', absl::SkipWhitespace());
}

std::vector<float> ParseFloats(const std::string& s) {
  std::vector<float> out;
  for (const auto& part : SplitList(s)) {
    float f;
    if (!absl::SimpleAtof(part, &f)) {
      std::cerr << "expected numbers, got '" << s << "'\n";
      std::exit(2);
    }
    out.push_back(f);
  }
  return out;
}

Split Limit(Split s, int64_t n) {
  if (n > 0 && n < s.labels.numel()) {
    s.images = s.images.narrow(0, 0, n);
    s.labels = s.labels.narrow(0, 0, n);
  }
  return s;
}

// IDX directory (train-* / t10k-*) or ImageFolder root (train/ + val/ or
// test/). `preprocess` arrives complete except that, for IDX data, an empty
// mean or std is computed from the training pixels.
absl::StatusOr<Data> LoadData(const std::string& dir, preprocess::PreprocessConfig preprocess,
                              std::vector<std::string> classes, bool need_train) {
  namespace fs = std::filesystem;
  Data d;
  auto train_pair = FindIdxPair(dir, "train");
  auto val_pair = FindIdxPair(dir, "t10k");
  if (val_pair.ok()) {
    RawIdx train_raw;
    if (need_train) {
      if (!train_pair.ok()) return train_pair.status();
      auto r = ReadIdxPair(train_pair->first, train_pair->second);
      if (!r.ok()) return r.status();
      train_raw = *r;
    }
    auto val_raw = ReadIdxPair(val_pair->first, val_pair->second);
    if (!val_raw.ok()) return val_raw.status();
    preprocess.channels = 1;
    if (preprocess.mean.empty() || preprocess.std.empty()) {
      auto [m, s] = PixelStats(need_train ? train_raw.images : val_raw->images);
      if (preprocess.mean.empty()) preprocess.mean = {m};
      if (preprocess.std.empty()) preprocess.std = {s};
    }
    const int64_t num_classes = val_raw->labels.max().item<int64_t>() + 1;
    if (classes.empty()) {
      for (int64_t k = 0; k < num_classes; ++k) classes.push_back(absl::StrCat("class_", k));
    }
    if (static_cast<int64_t>(classes.size()) < num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("labels go up to ", num_classes - 1, " but ",
                                                     classes.size(), " class names were given"));
    }
    if (need_train) {
      auto t = PreprocessRaw(train_raw.images, preprocess);
      if (!t.ok()) return t.status();
      d.train = {*t, train_raw.labels};
    }
    auto v = PreprocessRaw(val_raw->images, preprocess);
    if (!v.ok()) return v.status();
    d.val = {*v, val_raw->labels};
    d.description = absl::StrCat("idx:", dir);
  } else {
    std::string val_dir;
    for (const char* name : {"val", "validation", "test"}) {
      if (fs::is_directory(fs::path(dir) / name)) {
        val_dir = (fs::path(dir) / name).string();
        break;
      }
    }
    if (val_dir.empty() || (need_train && !fs::is_directory(fs::path(dir) / "train"))) {
      return absl::NotFoundError(
          absl::StrCat(dir,
                       " holds neither IDX files (train-images-idx3-ubyte[.gz], t10k-...) nor an "
                       "ImageFolder tree with train/ and val/ (or test/) directories"));
    }
    if (preprocess.mean.empty() || preprocess.std.empty()) {  // ImageNet's
      preprocess.mean = preprocess.channels == 3 ? std::vector<float>{0.485f, 0.456f, 0.406f}
                                                 : std::vector<float>{0.449f};
      preprocess.std = preprocess.channels == 3 ? std::vector<float>{0.229f, 0.224f, 0.225f}
                                                : std::vector<float>{0.226f};
    }
    if (need_train) {
      auto t = LoadImageFolder((fs::path(dir) / "train").string(), preprocess, classes);
      if (!t.ok()) return t.status();
      d.train = {t->images, t->labels};
      classes = t->classes;
    }
    auto v = LoadImageFolder(val_dir, preprocess, classes);
    if (!v.ok()) return v.status();
    d.val = {v->images, v->labels};
    classes = v->classes;
    d.description = absl::StrCat("imagefolder:", dir);
  }
  d.classes = classes;
  d.preprocess = preprocess;
  return d;
}

// Random crop after zero-padding (padding is black: the normalised value of
// pixel 0) and random horizontal flip, per sample.
torch::Tensor Augment(const torch::Tensor& x, int64_t pad, bool hflip,
                      const std::vector<float>& fill, std::mt19937_64& rng) {
  if (pad == 0 && !hflip) return x;
  const int64_t n = x.size(0), c = x.size(1), s = x.size(2);
  torch::Tensor out = torch::empty_like(x);
  torch::Tensor padded = x;
  if (pad > 0) {
    padded = torch::empty({n, c, s + 2 * pad, s + 2 * pad});
    for (int64_t k = 0; k < c; ++k) padded.select(1, k).fill_(fill[k]);
    padded.narrow(2, pad, s).narrow(3, pad, s).copy_(x);
  }
  std::uniform_int_distribution<int64_t> offset(0, 2 * pad);
  std::bernoulli_distribution flip(0.5);
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor crop = padded[i].narrow(1, offset(rng), s).narrow(2, offset(rng), s);
    if (hflip && flip(rng)) crop = crop.flip({2});
    out[i].copy_(crop);
  }
  return out;
}

struct EvalResult {
  double loss = 0, top1 = 0;
  int64_t correct = 0, count = 0;
};

EvalResult EvaluateModule(model::GhostNet& net, const Split& split, int64_t batch) {
  torch::NoGradGuard no_grad;
  net->eval();
  EvalResult r;
  double loss_sum = 0;
  for (int64_t i = 0; i < split.labels.numel(); i += batch) {
    const int64_t b = std::min(batch, split.labels.numel() - i);
    torch::Tensor logits = net->forward(split.images.narrow(0, i, b));
    torch::Tensor y = split.labels.narrow(0, i, b);
    loss_sum +=
        torch::nn::functional::cross_entropy(
            logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    r.correct += logits.argmax(1).eq(y).sum().item<int64_t>();
    r.count += b;
  }
  r.loss = loss_sum / std::max<int64_t>(r.count, 1);
  r.top1 = static_cast<double>(r.correct) / std::max<int64_t>(r.count, 1);
  return r;
}

// Loads a checkpoint to start from. With replace_head, the classifier is
// kept freshly initialised when its shape differs (a new set of classes),
// and an RGB stem is summed over its input channels for a grayscale model.
absl::Status LoadInit(model::GhostNet& net, const std::string& path, bool replace_head) {
  auto state = model::ReadWeightsFile(path);
  if (!state.ok()) return state.status();
  if (replace_head) {
    const model::StateDict own = model::ModuleStateDict(*net);
    std::map<std::string, torch::Tensor> mine(own.begin(), own.end());
    for (auto& [name, t] : *state) {
      auto it = mine.find(name);
      if (it == mine.end()) continue;
      if (name == "conv_stem.weight" && t.dim() == 4 && it->second.dim() == 4 && t.size(1) == 3 &&
          it->second.size(1) == 1) {
        t = t.sum(1, /*keepdim=*/true);
      }
      if (name.rfind("classifier.", 0) == 0 && !t.sizes().equals(it->second.sizes())) {
        t = it->second.detach().clone();
      }
    }
  }
  return model::LoadStateDict(*net, *state);
}

std::string CommandLine(int argc, char** argv) {
  std::vector<std::string> parts;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.find_first_of(" \t'\"") != std::string::npos) a = "'" + a + "'";
    parts.push_back(a);
  }
  return absl::StrJoin(parts, " ");
}

int Train(const std::vector<std::string>& args, const std::string& command) {
  Flags f("train");
  f.Define("data", "", "IDX directory (train-*/t10k-* files) or ImageFolder root (train/, val/)");
  f.Define("name", "", "model name, also the output file names");
  f.Define("out-dir", ".", "directory for <name>.safetensors and <name>.json");
  f.Define("width", "1.0", "GhostNet width multiplier");
  f.Define("input-size", "0", "square input side; 0 = 32 for IDX data, 224 for ImageFolder");
  f.Define("input-channels", "0", "1 or 3; 0 = 1 for IDX data, 3 for ImageFolder");
  f.Define("resize-shorter", "-1",
           "shorter side before the centre crop; 0 = resize straight to the input size; "
           "-1 = 0 for IDX data, input-size * 8/7 for ImageFolder");
  f.Define("mean", "auto",
           "per-channel mean, comma-separated; auto = from the training data "
           "(IDX) or ImageNet's (ImageFolder)");
  f.Define("std", "auto", "per-channel std, as --mean");
  f.Define("class-names", "", "comma-separated class names in label order, or @FILE");
  f.Define("epochs", "20", "training epochs");
  f.Define("batch-size", "128", "images per step");
  f.Define("optimizer", "sgd", "sgd (Nesterov momentum) or adamw");
  f.Define("lr", "0", "peak learning rate; 0 = 0.1 * batch/128 for sgd, 2e-3 for adamw");
  f.Define("momentum", "0.9", "SGD momentum");
  f.Define("weight-decay", "-1", "-1 = 5e-4 for sgd, 0.05 for adamw (not on biases or BN)");
  f.Define("schedule", "cosine", "learning-rate schedule: cosine or constant");
  f.Define("warmup-epochs", "1", "linear warm-up from lr/100, in epochs (may be fractional)");
  f.Define("label-smoothing", "0.1", "label smoothing of the cross-entropy loss");
  f.Define("pad-crop", "4", "random crop after padding by this many pixels; 0 disables");
  f.Define("hflip", "true", "random horizontal flip");
  f.Define("dropout", "0.2", "dropout before the classifier");
  f.Define("init", "", "checkpoint to start from (.pth or .safetensors), e.g. published weights");
  f.Define("replace-head", "false",
           "with --init: keep a new classifier when the class count differs; sum an RGB stem "
           "for a grayscale model");
  f.Define("seed", "0", "seed for initialisation, shuffling and augmentation");
  f.Define("threads", "0", "LibTorch threads; 0 = CPUs available");
  f.Define("limit-train", "0", "use only the first N training images (0 = all)");
  f.Define("limit-val", "0", "use only the first N validation images (0 = all)");
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::cout << f.Help();
    return 0;
  }
  if (auto s = f.Parse(args); !s.ok()) {
    std::cerr << s.message() << " (see ghostserve-train train --help)\n";
    return 2;
  }
  if (f.Str("data").empty() || f.Str("name").empty()) {
    std::cerr << "--data and --name are required (see ghostserve-train train --help)\n";
    return 2;
  }
  const int threads = model::ConfigureThreads(static_cast<int>(f.Int("threads")));
  const uint64_t seed = static_cast<uint64_t>(f.Int("seed"));
  torch::manual_seed(seed);
  std::mt19937_64 rng(seed);

  const bool idx = FindIdxPair(f.Str("data"), "t10k").ok();
  preprocess::PreprocessConfig pre;
  pre.crop_size = f.Int("input-size") > 0 ? f.Int("input-size") : (idx ? 32 : 224);
  pre.channels = f.Int("input-channels") > 0 ? f.Int("input-channels") : (idx ? 1 : 3);
  const int64_t resize = f.Int("resize-shorter");
  pre.resize_shorter = resize >= 0 ? resize : (idx ? 0 : (pre.crop_size * 8 + 6) / 7);
  // Empty = computed from the data (IDX) or ImageNet's (ImageFolder).
  pre.mean = f.Str("mean") == "auto" ? std::vector<float>{} : ParseFloats(f.Str("mean"));
  pre.std = f.Str("std") == "auto" ? std::vector<float>{} : ParseFloats(f.Str("std"));
  const auto load_start = Clock::now();
  auto data = LoadData(f.Str("data"), pre, SplitList(f.Str("class-names")), /*need_train=*/true);
  if (!data.ok()) {
    std::cerr << data.status().message() << "\n";
    return 1;
  }
  Split train = Limit(data->train, f.Int("limit-train"));
  Split val = Limit(data->val, f.Int("limit-val"));
  std::fprintf(stderr,
               "data: %lld training, %lld validation images, %zu classes, %lldx%lld x%lld, "
               "loaded in %.1f s\n",
               static_cast<long long>(train.labels.numel()),
               static_cast<long long>(val.labels.numel()), data->classes.size(),
               static_cast<long long>(pre.crop_size), static_cast<long long>(pre.crop_size),
               static_cast<long long>(data->preprocess.channels), Seconds(load_start));

  model::GhostNetOptions opts;
  opts.width = f.Num("width");
  opts.num_classes = static_cast<int64_t>(data->classes.size());
  opts.in_channels = data->preprocess.channels;
  opts.input_size = pre.crop_size;
  opts.dropout = f.Num("dropout");
  if (auto s = opts.Validate(); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 2;
  }
  model::GhostNet net(opts);
  model::InitializeDeterministic(net, seed);
  if (!f.Str("init").empty()) {
    if (auto s = LoadInit(net, f.Str("init"), f.Bool("replace-head")); !s.ok()) {
      std::cerr << "--init " << f.Str("init") << ": " << s.message() << "\n";
      return 1;
    }
  }

  const std::string opt_name = f.Str("optimizer");
  const bool sgd = opt_name == "sgd";
  if (!sgd && opt_name != "adamw") {
    std::cerr << "--optimizer must be sgd or adamw\n";
    return 2;
  }
  const int64_t batch = f.Int("batch-size");
  const double lr = f.Num("lr") > 0 ? f.Num("lr") : (sgd ? 0.1 * batch / 128.0 : 2e-3);
  const double wd = f.Num("weight-decay") >= 0 ? f.Num("weight-decay") : (sgd ? 5e-4 : 0.05);
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : net->parameters()) (p.dim() > 1 ? decay : no_decay).push_back(p);
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (sgd) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay,
                        std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(lr)
                                                                       .momentum(f.Num("momentum"))
                                                                       .nesterov(true)
                                                                       .weight_decay(wd)));
    groups.emplace_back(no_decay,
                        std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(lr)
                                                                       .momentum(f.Num("momentum"))
                                                                       .nesterov(true)
                                                                       .weight_decay(0)));
    optimizer = std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(lr));
  } else {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(lr).weight_decay(wd)));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                      torch::optim::AdamWOptions(lr).weight_decay(0)));
    optimizer = std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(lr));
  }
  auto set_lr = [&](double v) {
    for (auto& g : optimizer->param_groups()) {
      if (sgd) {
        static_cast<torch::optim::SGDOptions&>(g.options()).lr(v);
      } else {
        static_cast<torch::optim::AdamWOptions&>(g.options()).lr(v);
      }
    }
  };

  const int epochs = static_cast<int>(f.Int("epochs"));
  const int64_t n = train.labels.numel();
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const int64_t total_steps = steps_per_epoch * epochs;
  const int64_t warmup_steps = static_cast<int64_t>(f.Num("warmup-epochs") * steps_per_epoch);
  const bool cosine = f.Str("schedule") == "cosine";
  std::vector<float> fill;
  for (int64_t k = 0; k < opts.in_channels; ++k) {
    fill.push_back(-data->preprocess.mean[k] / data->preprocess.std[k]);
  }
  auto loss_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(f.Num("label-smoothing"));

  Progress progress(total_steps);
  const auto train_start = Clock::now();
  int64_t global_step = 0;
  EvalResult last;
  nlohmann::ordered_json history = nlohmann::ordered_json::array();
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    net->train();
    const auto epoch_start = Clock::now();
    torch::Tensor perm = torch::randperm(n, torch::kInt64);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t step = 0; step < steps_per_epoch; ++step) {
      double v = lr;
      if (global_step < warmup_steps) {
        v = lr * (0.01 + 0.99 * static_cast<double>(global_step) / warmup_steps);
      } else if (cosine) {
        const double t = static_cast<double>(global_step - warmup_steps) /
                         std::max<int64_t>(total_steps - warmup_steps, 1);
        v = 0.5 * lr * (1 + std::cos(M_PI * t));
      }
      set_lr(v);
      const int64_t b = std::min(batch, n - step * batch);
      torch::Tensor idx_batch = perm.narrow(0, step * batch, b);
      torch::Tensor x = Augment(train.images.index_select(0, idx_batch), f.Int("pad-crop"),
                                f.Bool("hflip"), fill, rng);
      torch::Tensor y = train.labels.index_select(0, idx_batch);
      optimizer->zero_grad();
      torch::Tensor logits = net->forward(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y, loss_options);
      loss.backward();
      optimizer->step();
      loss_sum += loss.item<double>() * b;
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      seen += b;
      ++global_step;
      progress.Update(epoch, epochs, step + 1, steps_per_epoch, loss_sum / seen,
                      static_cast<double>(correct) / seen, seen / Seconds(epoch_start),
                      global_step);
    }
    last = EvaluateModule(net, val, 500);
    const double epoch_s = Seconds(epoch_start);
    history.push_back({{"epoch", epoch},
                       {"train_loss", loss_sum / seen},
                       {"train_top1", static_cast<double>(correct) / seen},
                       {"val_loss", last.loss},
                       {"val_top1", last.top1},
                       {"seconds", epoch_s}});
    char summary[256];
    std::snprintf(summary, sizeof(summary),
                  "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f top1 %.4f  %.0f s "
                  "(%.0f img/s)",
                  epoch, epochs, loss_sum / seen, static_cast<double>(correct) / seen, last.loss,
                  last.top1, epoch_s, seen / epoch_s);
    progress.EndEpoch(summary);
  }
  const double train_s = Seconds(train_start);
  net->eval();

  namespace fs = std::filesystem;
  fs::create_directories(f.Str("out-dir"));
  const std::string weights_file = f.Str("name") + ".safetensors";
  const fs::path weights_path = fs::path(f.Str("out-dir")) / weights_file;
  const fs::path config_path = fs::path(f.Str("out-dir")) / (f.Str("name") + ".json");
  if (auto s = model::WriteSafetensors(weights_path.string(), model::ModuleStateDict(*net),
                                       {{"format", "pt"}, {"model", f.Str("name")}});
      !s.ok()) {
    std::cerr << s.message() << "\n";
    return 1;
  }
  config::ModelConfig mc;
  mc.name = f.Str("name");
  mc.net = opts;
  mc.labels = data->classes;
  mc.preprocess = data->preprocess;
  nlohmann::ordered_json training = {
      {"command", command},
      {"data", data->description},
      {"train_images", n},
      {"val_images", val.labels.numel()},
      {"epochs", epochs},
      {"batch_size", batch},
      {"optimizer", opt_name},
      {"lr", lr},
      {"weight_decay", wd},
      {"schedule", f.Str("schedule")},
      {"label_smoothing", f.Num("label-smoothing")},
      {"pad_crop", f.Int("pad-crop")},
      {"hflip", f.Bool("hflip")},
      {"seed", seed},
      {"threads", threads},
      {"init", f.Str("init")},
      {"train_seconds", std::round(train_s)},
      {"val_top1", last.top1},
      {"history", history},
  };
  mc.training_json = training.dump();
  {
    std::ofstream out(config_path);
    out << config::ModelConfigToJson(mc, weights_file);
    if (!out.flush()) {
      std::cerr << "cannot write " << config_path << "\n";
      return 1;
    }
  }
  nlohmann::ordered_json result = {{"model", mc.name},
                                   {"weights", weights_path.string()},
                                   {"config", config_path.string()},
                                   {"epochs", epochs},
                                   {"train_seconds", std::round(train_s * 10) / 10},
                                   {"val_images", last.count},
                                   {"val_top1", last.top1}};
  std::cout << result.dump() << std::endl;
  return 0;
}

int Evaluate(const std::vector<std::string>& args) {
  Flags f("evaluate");
  f.Define("model-config", "", "model config file written by train (or any --model-config)");
  f.Define("data", "", "IDX directory (t10k-* files are used) or ImageFolder root (val/ or test/)");
  f.Define("batch-size", "256", "images per forward pass");
  f.Define("limit", "0", "evaluate only the first N images (0 = all)");
  f.Define("threads", "0", "LibTorch threads; 0 = CPUs available");
  f.Define("precision", "", "fp32 | bf16 | int8 | auto (default: the model config's)");
  f.Define("calibration", "",
           "int8: calibration file (default: the one the model config's \"calibration\" "
           "names)");
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::cout << f.Help();
    return 0;
  }
  if (auto s = f.Parse(args); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 2;
  }
  if (f.Str("model-config").empty() || f.Str("data").empty()) {
    std::cerr << "--model-config and --data are required\n";
    return 2;
  }
  model::ConfigureThreads(static_cast<int>(f.Int("threads")));
  model::ConfigureInferenceThread(static_cast<int>(f.Int("threads")));
  auto configs = config::ReadModelConfigs(f.Str("model-config"));
  if (!configs.ok() || configs->size() != 1) {
    std::cerr << (configs.ok() ? "expected one model config" : configs.status().message()) << "\n";
    return 1;
  }
  const config::ModelConfig& mc = configs->front();
  const auto& pre = mc.preprocess;
  auto data = LoadData(f.Str("data"), pre, mc.labels, /*need_train=*/false);
  if (!data.ok()) {
    std::cerr << data.status().message() << "\n";
    return 1;
  }
  model::LoadModelOptions load = config::LoadOptions(mc);
  if (!f.Str("precision").empty()) {
    auto precision = model::ParsePrecision(f.Str("precision"));
    if (!precision.ok()) {
      std::cerr << precision.status().message() << "\n";
      return 2;
    }
    load.inference.precision = *precision;
  }
  if (!f.Str("calibration").empty()) {
    load.calibration_path = f.Str("calibration");
    load.calibration_bytes = {};
  }
  auto loaded = model::LoadModel(load);
  if (!loaded.ok()) {
    std::cerr << loaded.status().message() << "\n";
    return 1;
  }
  Split val = Limit(data->val, f.Int("limit"));
  const int64_t batch = f.Int("batch-size");
  int64_t correct = 0;
  const auto start = Clock::now();
  for (int64_t i = 0; i < val.labels.numel(); i += batch) {
    const int64_t b = std::min(batch, val.labels.numel() - i);
    // The served path: channels-last input into the compiled model.
    torch::Tensor x = val.images.narrow(0, i, b).contiguous(torch::MemoryFormat::ChannelsLast);
    auto logits = (*loaded)->inference->Forward(x);
    if (!logits.ok()) {
      std::cerr << logits.status().message() << "\n";
      return 1;
    }
    correct += logits->argmax(1).eq(val.labels.narrow(0, i, b)).sum().item<int64_t>();
  }
  const int64_t count = val.labels.numel();
  nlohmann::ordered_json result = {
      {"model", mc.name},
      {"path", "in-process"},
      {"precision", std::string(model::PrecisionName((*loaded)->inference->options().precision))},
      {"images", count},
      {"correct", correct},
      {"top1", static_cast<double>(correct) / std::max<int64_t>(count, 1)},
      {"seconds", std::round(Seconds(start) * 100) / 100}};
  std::cout << result.dump() << std::endl;
  return 0;
}

// Measures a model's int8 calibration: a seeded random subset of the
// training images, preprocessed as served, run through the planned fp32
// engine, every step's output range recorded (model/calibration.h).
int Calibrate(const std::vector<std::string>& args) {
  Flags f("calibrate");
  f.Define("model-config", "", "model config file whose weights to calibrate");
  f.Define("data", "",
           "IDX directory (train-* files are used) or ImageFolder root (train/ is used)");
  f.Define("images", "512", "how many training images, chosen at random");
  f.Define("batch-size", "64", "images per forward pass");
  f.Define("seed", "0", "seed of the random choice of images");
  f.Define("threads", "0", "LibTorch threads; 0 = CPUs available");
  f.Define("out", "", "calibration file to write (default: <config dir>/<name>.calibration)");
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::cout << f.Help();
    return 0;
  }
  if (auto s = f.Parse(args); !s.ok()) {
    std::cerr << s.message() << " (see ghostserve-train calibrate --help)\n";
    return 2;
  }
  if (f.Str("model-config").empty() || f.Str("data").empty()) {
    std::cerr << "--model-config and --data are required (see ghostserve-train calibrate --help)\n";
    return 2;
  }
  if (f.Int("images") < 1 || f.Int("batch-size") < 1 || f.Int("seed") < 0) {
    std::cerr << "--images and --batch-size must be at least 1, --seed at least 0\n";
    return 2;
  }
  model::ConfigureThreads(static_cast<int>(f.Int("threads")));
  model::ConfigureInferenceThread(static_cast<int>(f.Int("threads")));
  namespace fs = std::filesystem;
  const std::string config_path = f.Str("model-config");
  auto configs = config::ReadModelConfigs(config_path);
  if (!configs.ok() || configs->size() != 1) {
    std::cerr << (configs.ok() ? "expected one model config" : configs.status().message()) << "\n";
    return 1;
  }
  const config::ModelConfig& mc = configs->front();
  const fs::path config_dir =
      fs::is_directory(config_path) ? fs::path(config_path) : fs::path(config_path).parent_path();
  const std::string out_path =
      f.Str("out").empty() ? (config_dir / (mc.name + ".calibration")).string() : f.Str("out");

  const uint64_t seed = static_cast<uint64_t>(f.Int("seed"));
  const auto start = Clock::now();
  auto sample = SampleTrainingImages(f.Str("data"), mc.preprocess, f.Int("images"), seed);
  if (!sample.ok()) {
    std::cerr << sample.status().message() << "\n";
    return 1;
  }
  // The ranges are those of the fp32 engine, whatever the config serves in.
  model::LoadModelOptions load = config::LoadOptions(mc);
  load.inference.precision = model::Precision::kFp32;
  load.inference.planned = true;
  load.calibration_path.clear();
  load.calibration_bytes = {};
  auto loaded = model::LoadModel(load);
  if (!loaded.ok()) {
    std::cerr << loaded.status().message() << "\n";
    return 1;
  }
  std::vector<torch::Tensor> batches;
  const int64_t count = sample->images.size(0), batch = f.Int("batch-size");
  for (int64_t i = 0; i < count; i += batch) {
    // Channels-last, as the server's batch slabs.
    batches.push_back(sample->images.narrow(0, i, std::min(batch, count - i))
                          .contiguous(torch::MemoryFormat::ChannelsLast));
  }
  const auto calibrate_start = Clock::now();
  auto calibration = (*loaded)->inference->Calibrate(batches);
  if (!calibration.ok()) {
    std::cerr << calibration.status().message() << "\n";
    return 1;
  }
  const double calibrate_s = Seconds(calibrate_start);
  calibration->images = count;
  calibration->data = sample->description;
  // Written aside and renamed, so a server loading the model never reads
  // half a file.
  const std::string tmp = out_path + ".tmp";
  std::ofstream out(tmp);
  out << model::CalibrationToJson(*calibration);
  out.close();
  std::error_code ec;
  if (!out) {
    std::cerr << "cannot write " << tmp << "\n";
    fs::remove(tmp, ec);
    return 1;
  }
  fs::rename(tmp, out_path, ec);
  if (ec) {
    std::cerr << "cannot rename " << tmp << " to " << out_path << ": " << ec.message() << "\n";
    fs::remove(tmp, ec);
    return 1;
  }
  // The config serves this file only if it names it.
  if (mc.calibration_path.empty() ||
      fs::weakly_canonical(mc.calibration_path, ec) != fs::weakly_canonical(out_path, ec)) {
    const fs::path relative = fs::path(out_path).lexically_proximate(config_dir);
    std::fprintf(stderr, "note: %s does not name this file; add \"calibration\": \"%s\" to it\n",
                 config_path.c_str(), relative.string().c_str());
  }
  nlohmann::ordered_json result = {{"model", mc.name},
                                   {"out", out_path},
                                   {"images", count},
                                   {"steps", calibration->ranges.size()},
                                   {"data", calibration->data},
                                   {"calibrate_seconds", std::round(calibrate_s * 100) / 100},
                                   {"seconds", std::round(Seconds(start) * 100) / 100}};
  std::cout << result.dump() << std::endl;
  return 0;
}

// Writes an IDX split as PNG files in an ImageFolder tree, OUT/<label>/<index>.png
// (label = the class index), the layout `ghostserve-client eval` reads: the
// dataset's own images as a client would send them.
int Export(const std::vector<std::string>& args) {
  Flags f("export");
  f.Define("data", "", "IDX directory (MNIST / Fashion-MNIST file names)");
  f.Define("split", "t10k", "t10k (test) or train");
  f.Define("out", "", "output directory");
  f.Define("limit", "0", "export only the first N images (0 = all)");
  if (std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::cout << f.Help();
    return 0;
  }
  if (auto s = f.Parse(args); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 2;
  }
  if (f.Str("data").empty() || f.Str("out").empty()) {
    std::cerr << "--data and --out are required\n";
    return 2;
  }
  auto pair = FindIdxPair(f.Str("data"), f.Str("split"));
  if (!pair.ok()) {
    std::cerr << pair.status().message() << "\n";
    return 1;
  }
  auto raw = ReadIdxPair(pair->first, pair->second);
  if (!raw.ok()) {
    std::cerr << raw.status().message() << "\n";
    return 1;
  }
  namespace fs = std::filesystem;
  int64_t n = raw->labels.numel();
  if (f.Int("limit") > 0) n = std::min(n, f.Int("limit"));
  const int64_t h = raw->images.size(1), w = raw->images.size(2);
  torch::Tensor images = raw->images.contiguous();
  for (int64_t i = 0; i < n; ++i) {
    const fs::path dir = fs::path(f.Str("out")) / std::to_string(raw->labels[i].item<int64_t>());
    fs::create_directories(dir);
    char name[32];
    std::snprintf(name, sizeof(name), "%05lld.png", static_cast<long long>(i));
    const cv::Mat img(static_cast<int>(h), static_cast<int>(w), CV_8UC1,
                      images.data_ptr<uint8_t>() + i * h * w);
    if (!cv::imwrite((dir / name).string(), img)) {
      std::cerr << "cannot write " << (dir / name).string() << "\n";
      return 1;
    }
  }
  nlohmann::ordered_json result = {{"images", n}, {"out", f.Str("out")}};
  std::cout << result.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace ghostserve::train

int main(int argc, char** argv) {
  using namespace ghostserve::train;
  const std::string usage =
      "usage: ghostserve-train train|evaluate|calibrate|export [flags]   (--help after a "
      "command lists flags)\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "train") return Train(args, CommandLine(argc, argv));
  if (cmd == "evaluate") return Evaluate(args);
  if (cmd == "calibrate") return Calibrate(args);
  if (cmd == "export") return Export(args);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << usage;
    return 0;
  }
  std::cerr << usage;
  return 2;
}
