// Accuracy of a served model over a labelled image tree, through Classify:
// what `ghostserve-client eval` runs. Every image travels as its encoded
// file, so the server's decoding, preprocessing and batching are all part of
// what is measured.
#ifndef GHOSTSERVE_CLIENT_EVAL_H_
#define GHOSTSERVE_CLIENT_EVAL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/rpc.h"

namespace ghostserve::client {

// One labelled image file.
struct LabelledFile {
  std::string path;
  // The class directory's name: a class index ("3") or a label ("Sandal").
  std::string label;
};

// An ImageFolder tree: root/<class>/<file>.{jpg,jpeg,png}. Sorted by class,
// then file name; with limit > 0, every class is sampled evenly (the first
// files of each class in turn) until `limit` files are chosen.
absl::StatusOr<std::vector<LabelledFile>> ListImageFolder(const std::string& root, int64_t limit);

struct EvalOptions {
  // Server address, TLS and token.
  ConnectionOptions connection;
  std::string model;
  int concurrency = 16;
  int64_t timeout_ms = kDefaultTimeoutMs;
};

struct EvalResult {
  int64_t images = 0;
  int64_t correct = 0;
  int64_t errors = 0;
  std::map<std::string, int64_t> errors_by_code;
  // Per class directory: images and correct answers.
  std::map<std::string, std::pair<int64_t, int64_t>> per_class;
  double seconds = 0;
};

// Sends every file through Classify (top_k 1) with `concurrency` calls in
// flight. A prediction is correct when the class directory's name equals the
// predicted class index or the predicted label. Failed calls count as wrong
// and are tallied by code. InvalidArgument when a file cannot be read.
absl::StatusOr<EvalResult> RunEval(const EvalOptions& options,
                                   const std::vector<LabelledFile>& files);

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_EVAL_H_
