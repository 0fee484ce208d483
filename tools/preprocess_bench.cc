// ghostserve-preprocess-bench: times decode + preprocess (PreprocessInto,
// the ImageNet config, one thread like a server decode thread) per image over
// real photographs encoded as PNG and as JPEG, for the old decoder path
// (OpenCV imdecode for both formats: PreprocessConfig::fast_png_decode off)
// against the current one (PreprocessConfig::fast_png_decode). Prints one JSON line.
//
//   ghostserve-preprocess-bench --rounds 21
//
// The photographs are the test photos in tests/testdata (chelsea 451x300,
// coffee 600x400, astronaut 384x384), each at its own size and re-encoded by
// OpenCV at a longer side of 1024 and 1600 (bicubic upscaling), so the sets
// span 0.13 to 1.7 megapixels: 9 PNGs (zlib level 6, as libpng, PIL and most
// tools write them) and the same 9 as JPEG (quality 90). Variants run
// interleaved, in alternating order, image by image within each round; a
// round's figure is the mean ms/image over a set, and the report gives the
// median over rounds.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "server/preprocess/image_decode.h"

namespace {

using ghostserve::preprocess::ImageLimits;
using ghostserve::preprocess::PreprocessConfig;
using ghostserve::preprocess::PreprocessInto;

struct Image {
  std::string name;
  std::string bytes;
  int width = 0, height = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string Encode(const cv::Mat& bgr, const std::string& ext, const std::vector<int>& params) {
  std::vector<unsigned char> buf;
  if (!cv::imencode(ext, bgr, buf, params)) throw std::runtime_error("imencode " + ext);
  return std::string(buf.begin(), buf.end());
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown";
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2);
}

struct Variant {
  std::string name;
  PreprocessConfig config;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("ghostserve-preprocess-bench: decode + preprocess ms per image, PNG and JPEG");
  std::string testdata = GHOSTSERVE_TESTDATA;
  int rounds = 21;
  int warmup = 2;
  app.add_option("--testdata", testdata, "directory with chelsea.png, coffee.jpg, astronaut.jpg")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "measured rounds")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--warmup", warmup, "unmeasured rounds")->check(CLI::Range(0, 100))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  cv::setNumThreads(1);  // as on the server's decode threads
  std::vector<std::pair<std::string, cv::Mat>> photos;
  for (const char* file : {"chelsea.png", "coffee.jpg", "astronaut.jpg"}) {
    const std::string bytes = ReadFile(testdata + "/" + file);
    cv::Mat img = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8UC1,
                                       const_cast<char*>(bytes.data())),
                               cv::IMREAD_COLOR);
    if (img.empty()) throw std::runtime_error(std::string("cannot decode ") + file);
    std::string stem(file);
    photos.emplace_back(stem.substr(0, stem.find('.')), img);
  }
  std::vector<Image> png_set, jpeg_set;
  for (const auto& [name, img] : photos) {
    for (int longer : {0, 1024, 1600}) {
      cv::Mat sized = img;
      if (longer != 0) {
        const double s = static_cast<double>(longer) / std::max(img.cols, img.rows);
        cv::resize(img, sized,
                   cv::Size(static_cast<int>(std::lround(img.cols * s)),
                            static_cast<int>(std::lround(img.rows * s))),
                   0, 0, cv::INTER_CUBIC);
      }
      const std::string label = name + "_" + std::to_string(sized.cols) + "x" + std::to_string(sized.rows);
      png_set.push_back({label + ".png", Encode(sized, ".png", {cv::IMWRITE_PNG_COMPRESSION, 6}),
                         sized.cols, sized.rows});
      jpeg_set.push_back({label + ".jpg", Encode(sized, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90}),
                          sized.cols, sized.rows});
    }
  }

  std::vector<Variant> variants(2);
  variants[0].name = "before";  // OpenCV imdecode for PNG and JPEG
  variants[0].config.fast_png_decode = false;
  variants[1].name = "after";
  const ImageLimits limits;
  const size_t n_out = 224 * 224 * 3;
  std::vector<std::vector<float>> out(variants.size(), std::vector<float>(n_out));

  nlohmann::json report;
  report["bench"] = "preprocess";
  report["cpu"] = CpuModel();
  report["opencv_threads"] = 1;
  report["rounds"] = rounds;
  report["config"] = "ImageNet: shorter side 256, bilinear, centre crop 224, normalise";
  for (auto* set : {&png_set, &jpeg_set}) {
    const bool is_png = set == &png_set;
    // per_round[v][r]: mean ms/image of variant v in round r.
    std::vector<std::vector<double>> per_round(variants.size());
    std::vector<std::vector<std::vector<double>>> per_image(
        variants.size(), std::vector<std::vector<double>>(set->size()));
    double max_abs_diff = 0;
    for (int r = -warmup; r < rounds; ++r) {
      std::vector<double> sum(variants.size(), 0.0);
      for (size_t i = 0; i < set->size(); ++i) {
        const Image& image = (*set)[i];
        for (size_t k = 0; k < variants.size(); ++k) {
          const size_t v = (r + i) % 2 == 0 ? k : variants.size() - 1 - k;  // alternate order
          const auto t0 = std::chrono::steady_clock::now();
          const absl::Status s = PreprocessInto(image.bytes, variants[v].config, limits, out[v].data());
          const double ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          if (!s.ok()) {
            std::cerr << image.name << ": " << s << "\n";
            return 1;
          }
          sum[v] += ms;
          if (r >= 0) per_image[v][i].push_back(ms);
        }
        if (r == 0) {
          for (size_t j = 0; j < n_out; ++j) {
            max_abs_diff = std::max(max_abs_diff, static_cast<double>(std::abs(out[0][j] - out[1][j])));
          }
        }
      }
      if (r >= 0) {
        for (size_t v = 0; v < variants.size(); ++v) per_round[v].push_back(sum[v] / set->size());
      }
    }
    nlohmann::json j;
    double bytes = 0, mp = 0;
    nlohmann::json images = nlohmann::json::array();
    for (size_t i = 0; i < set->size(); ++i) {
      const Image& image = (*set)[i];
      bytes += image.bytes.size();
      mp += image.width * static_cast<double>(image.height) / 1e6;
      nlohmann::json im;
      im["name"] = image.name;
      im["kb"] = std::round(image.bytes.size() / 102.4) / 10;
      for (size_t v = 0; v < variants.size(); ++v) {
        im[variants[v].name + "_ms"] = std::round(Median(per_image[v][i]) * 1000) / 1000;
      }
      images.push_back(im);
    }
    j["images"] = set->size();
    j["mean_megapixels"] = std::round(mp / set->size() * 1000) / 1000;
    j["mean_kb"] = std::round(bytes / set->size() / 102.4) / 10;
    const double before = Median(per_round[0]), after = Median(per_round[1]);
    j["before_ms_per_image"] = std::round(before * 1000) / 1000;
    j["after_ms_per_image"] = std::round(after * 1000) / 1000;
    j["speedup"] = std::round(before / after * 1000) / 1000;
    j["max_abs_diff"] = max_abs_diff;  // normalised units, first round, all images
    j["per_image"] = images;
    report[is_png ? "png" : "jpeg"] = j;
  }
  std::cout << report.dump() << std::endl;
  return 0;
}
