#include "client/eval.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "ghostserve/v1/classifier.grpc.pb.h"

namespace ghostserve::client {

absl::StatusOr<std::vector<LabelledFile>> ListImageFolder(const std::string& root, int64_t limit) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return absl::NotFoundError(root + " is not a directory");
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  std::vector<std::vector<LabelledFile>> by_class;
  for (const auto& c : classes) {
    std::vector<LabelledFile> files;
    for (const auto& e : fs::directory_iterator(fs::path(root) / c, ec)) {
      const std::string ext = absl::AsciiStrToLower(e.path().extension().string());
      if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
        files.push_back({e.path().string(), c});
      }
    }
    std::sort(files.begin(), files.end(),
              [](const LabelledFile& a, const LabelledFile& b) { return a.path < b.path; });
    by_class.push_back(std::move(files));
  }
  std::vector<LabelledFile> out;
  if (limit <= 0) {
    for (auto& files : by_class) out.insert(out.end(), files.begin(), files.end());
  } else {
    for (size_t i = 0; static_cast<int64_t>(out.size()) < limit; ++i) {
      bool any = false;
      for (auto& files : by_class) {
        if (i < files.size() && static_cast<int64_t>(out.size()) < limit) {
          out.push_back(files[i]);
          any = true;
        }
      }
      if (!any) break;
    }
  }
  if (out.empty()) return absl::NotFoundError(root + " holds no class directories with images");
  return out;
}

absl::StatusOr<EvalResult> RunEval(const EvalOptions& options,
                                   const std::vector<LabelledFile>& files) {
  std::vector<std::string> images(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    std::ifstream in(files[i].path, std::ios::binary);
    if (!in) return absl::InvalidArgumentError("cannot read " + files[i].path);
    std::ostringstream ss;
    ss << in.rdbuf();
    images[i] = ss.str();
  }
  auto connection = Connection::Create(options.connection);
  if (!connection.ok()) return connection.status();
  EvalResult result;
  result.images = static_cast<int64_t>(files.size());
  std::mutex mu;
  std::atomic<size_t> next{0};
  const auto start = std::chrono::steady_clock::now();
  auto worker = [&](int index) {
    // A few connections, so calls are not serialised on one HTTP/2 stream limit.
    auto stub = ::ghostserve::v1::Classifier::NewStub(connection->MakeChannel(index % 4));
    for (size_t i = next++; i < files.size(); i = next++) {
      ::ghostserve::v1::ClassifyRequest request;
      request.set_model(options.model);
      request.set_image(images[i]);
      request.set_top_k(1);
      ::ghostserve::v1::ClassifyResponse response;
      grpc::ClientContext context;
      SetTimeout(context, options.timeout_ms);
      const grpc::Status status = stub->Classify(&context, request, &response);
      const LabelledFile& f = files[i];
      bool correct = false;
      if (status.ok() && response.predictions_size() > 0) {
        const auto& p = response.predictions(0);
        correct = f.label == std::to_string(p.class_index()) || f.label == p.label();
      }
      std::lock_guard<std::mutex> lock(mu);
      auto& pc = result.per_class[f.label];
      ++pc.first;
      if (correct) {
        ++pc.second;
        ++result.correct;
      }
      if (!status.ok()) {
        ++result.errors;
        ++result.errors_by_code[StatusCodeName(status.error_code())];
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, options.concurrency); ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace ghostserve::client
