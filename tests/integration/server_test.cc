// End-to-end tests of the gRPC server: each fixture builds an InferenceCore
// with two small untrained GhostNets, starts a real GhostServer on loopback
// port 0 (gRPC and /metrics), and talks to it through real gRPC stubs.
// Answers are checked against the same servable's model run in-process on a
// batch of one.
#include "server/service/server.h"

#include <arpa/inet.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/health.h"
#include "ghostserve/v1/classifier.grpc.pb.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "model/loaded_model.h"
#include "server/batcher/clock.h"
#include "server/config/config.h"
#include "server/core/torch_model.h"
#include "server/metrics/metrics.h"
#include "server/preprocess/image.h"

#ifndef GHOSTSERVE_TESTDATA
#error "GHOSTSERVE_TESTDATA must name the test image directory"
#endif

namespace ghostserve {
namespace {

using v1::ClassifyRequest;
using v1::ClassifyResponse;

constexpr char kBig[] = "ghostnet_050";
constexpr char kTiny[] = "tiny_10";
constexpr int kTinyClasses = 10;
// Published parameter count of GhostNet 0.5x with the 1000-class head.
constexpr uint64_t kGhostNet050Parameters = 2'587'292;
constexpr int64_t kCallTimeoutMs = 30'000;
// A server score may differ from the in-process one by this fraction of it
// (batches of different sizes round differently), plus float32 rounding.
constexpr double kScoreRelTolerance = 1e-4;

double ScoreTolerance(double want) { return kScoreRelTolerance * std::abs(want) + 1e-7; }

const std::vector<std::string>& Photos() {
  static const auto* const kPhotos =
      new std::vector<std::string>{"chelsea.jpg", "coffee.jpg", "astronaut.jpg"};
  return *kPhotos;
}

// The photos plus every encoding variant of chelsea.
const std::vector<std::string>& AllImages() {
  static const auto* const kAll = new std::vector<std::string>{
      "chelsea.jpg",      "coffee.jpg",          "astronaut.jpg",
      "chelsea.png",      "chelsea_16bit.png",   "chelsea_gray.png",
      "chelsea_rgba.png", "chelsea_palette.png", "chelsea_exif_rot.jpg"};
  return *kAll;
}

std::string ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(GHOSTSERVE_TESTDATA) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Name of a generated image that keeps a preprocessing thread busy for a
// while (a few hundred ms here): tests use it to hold requests in flight
// without relying on batching delays, which the batcher may cut short when
// nothing else is on its way.
constexpr char kSlowImage[] = "generated:5000x5000.png";

// A smooth 5000x5000 RGB PNG: about 3 MB encoded, 75 MB decoded.
std::string MakeSlowImage() {
  constexpr int kSide = 5000;
  cv::Mat img(kSide, kSide, CV_8UC3);
  for (int y = 0; y < kSide; ++y) {
    auto* row = img.ptr<cv::Vec3b>(y);
    for (int x = 0; x < kSide; ++x) {
      row[x] = cv::Vec3b(static_cast<uint8_t>(x / 16), static_cast<uint8_t>(y / 16),
                         static_cast<uint8_t>((x + y) / 32));
    }
  }
  std::vector<uint8_t> buf;
  cv::imencode(".png", img, buf);
  return std::string(buf.begin(), buf.end());
}

// Cached: the files are read (or generated) once per process.
const std::string& Image(const std::string& name) {
  static std::mutex mu;
  static auto* const cache = new std::map<std::string, std::string>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(name);
  if (it == cache->end()) {
    it = cache->emplace(name, name == kSlowImage ? MakeSlowImage() : ReadTestdata(name)).first;
  }
  return it->second;
}

std::vector<std::string> TinyLabels() {
  std::vector<std::string> labels;
  for (int i = 0; i < kTinyClasses; ++i) labels.push_back("c" + std::to_string(i));
  return labels;
}

// Untrained GhostNets (BatchNorm at identity, Kaiming-initialised
// convolutions) amplify their input about a million times by the logits, so
// the softmax would be one-hot and every rank below the first a tie at 0.
// The network is close to positively homogeneous (ReLU, zero biases), so
// preprocessing that divides the input by this much brings the logits to
// O(1): then every score depends on the image and a mixed-up answer shows.
constexpr float kInputScale = 1e6f;

preprocess::PreprocessConfig TestPreprocess() {
  preprocess::PreprocessConfig p = preprocess::PreprocessConfig::ImageNet();
  for (float& s : p.std) s *= kInputScale;
  return p;
}

std::vector<core::ModelSpec> TestModels() {
  core::ModelSpec big;
  big.name = kBig;
  big.load.net = *model::BuiltinModelOptions(kBig);
  big.load.seed = 3;
  big.preprocess = TestPreprocess();
  big.labels = config::ImageNetLabels();

  core::ModelSpec tiny;
  tiny.name = kTiny;
  tiny.load.net = *model::BuiltinModelOptions(kBig);
  tiny.load.net.width = 0.5;
  tiny.load.net.num_classes = kTinyClasses;
  tiny.load.seed = 4;
  tiny.preprocess = TestPreprocess();
  tiny.labels = TinyLabels();
  return {big, tiny};
}

struct TestServerOptions {
  int max_batch_size = 8;
  int64_t max_delay_us = 5000;
  int max_queue_size = 256;
  int preprocess_threads = 1;
  int preprocess_queue = 512;
  int max_receive_message_bytes = 1 << 20;
};

void SetTimeout(grpc::ClientContext& ctx, int64_t ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// Classify calls on the callback API, so many can be outstanding from one
// thread. Start() them, then Wait() for all answers.
struct AsyncClassify {
  grpc::ClientContext ctx;
  ClassifyRequest request;
  ClassifyResponse response;
  grpc::Status status;
  std::string image_name;
};

class AsyncCalls {
 public:
  explicit AsyncCalls(v1::Classifier::Stub* stub) : stub_(stub) {}
  ~AsyncCalls() { Wait(); }

  // `call` must outlive the answer.
  void Start(AsyncClassify* call, int64_t timeout_ms = kCallTimeoutMs) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++pending_;
    }
    SetTimeout(call->ctx, timeout_ms);
    stub_->async()->Classify(&call->ctx, &call->request, &call->response,
                             [this, call](grpc::Status s) {
                               call->status = std::move(s);
                               std::lock_guard<std::mutex> lock(mu_);
                               if (--pending_ == 0) cv_.notify_all();
                             });
  }
  // True when every started call has been answered within the timeout.
  bool Wait(int64_t timeout_ms = kCallTimeoutMs + 5000) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [this] { return pending_ == 0; });
  }

 private:
  v1::Classifier::Stub* const stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;
};

// Starts every call at once and waits until all have been answered.
bool RunAll(v1::Classifier::Stub* stub, std::vector<std::unique_ptr<AsyncClassify>>& calls) {
  AsyncCalls async(stub);
  for (auto& c : calls) async.Start(c.get());
  return async.Wait();
}

// Blocking HTTP/1.1 GET on 127.0.0.1:port; returns the whole response
// (status line, headers and body), or "" if the connection failed.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = send(fd, req.data() + sent, req.size() - sent, 0);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string out;
  char buf[16384];
  while (true) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// Series of a Prometheus text exposition: "name{labels}" -> value, exactly
// as the exporter prints the series.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    out[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return out;
}

// Softmax of one image's logits, as the server computes it.
torch::Tensor Probabilities(const torch::Tensor& logits) {
  return torch::softmax(logits.to(torch::kDouble), 0);
}

double MaxRelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  const double scale = std::max(1.0, want.abs().max().item<double>());
  return (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>() / scale;
}

// The server's predictions are the in-process top k: each score within
// ScoreTolerance of the in-process probability of its class, best first,
// labels from the model's list, and the same classes in the same order except
// where the in-process probabilities of two ranks are a near tie.
void ExpectPredictionsMatch(const ClassifyResponse& r, const torch::Tensor& logits,
                            const std::vector<std::string>& labels, int k,
                            const std::string& what) {
  SCOPED_TRACE(what);
  const torch::Tensor probs = Probabilities(logits);
  ASSERT_EQ(r.predictions_size(), k);
  auto [top_values, top_indices] = probs.topk(k);
  for (int i = 0; i < k; ++i) {
    const auto& p = r.predictions(i);
    ASSERT_LT(p.class_index(), static_cast<uint32_t>(probs.size(0)));
    EXPECT_EQ(p.label(), labels[p.class_index()]) << "rank " << i;
    const double want_score = probs[p.class_index()].item<double>();
    EXPECT_NEAR(p.score(), want_score, ScoreTolerance(want_score))
        << "rank " << i << " class " << p.class_index();
    if (i > 0) {
      EXPECT_GE(r.predictions(i - 1).score(), p.score()) << "rank " << i;
    }
    const int64_t want = top_indices[i].item<int64_t>();
    if (static_cast<int64_t>(p.class_index()) != want) {
      EXPECT_NEAR(want_score, top_values[i].item<double>(), ScoreTolerance(want_score))
          << "rank " << i << ": got class " << p.class_index() << ", in-process top is " << want
          << " and they are not tied";
    }
  }
}

class ServerTest : public ::testing::Test {
 protected:
  virtual TestServerOptions Options() const { return {}; }

  void SetUp() override {
    const TestServerOptions o = Options();
    core::CoreOptions co;
    co.batching.max_batch_size = o.max_batch_size;
    co.batching.max_delay_us = o.max_delay_us;
    co.batching.max_queue_size = o.max_queue_size;
    co.preprocess_threads = o.preprocess_threads;
    co.preprocess_queue = o.preprocess_queue;
    // Hundreds of servers start here; plans for other batch sizes are built
    // on demand (which this also exercises).
    co.warm_every_batch_size = false;
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<metrics::ServerMetrics>(registry_.get(),
                                                        std::vector<std::string>{kBig, kTiny});
    auto core =
        core::CreateInferenceCore(co, TestModels(), batcher::RealClock::Get(), metrics_.get());
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);

    service::ServerOptions so;
    so.listen = "127.0.0.1:0";
    so.metrics_listen = "127.0.0.1:0";
    so.max_receive_message_bytes = o.max_receive_message_bytes;
    auto server = service::GhostServer::Create(so, core_.get(), registry_, metrics_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->port(), 0);
    ASSERT_GT(server_->metrics_port(), 0);
    ASSERT_TRUE(core_->Warmup().ok());
    server_->SetServing(true);

    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    ASSERT_TRUE(
        channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
    classifier_ = v1::Classifier::NewStub(channel_);
    kserve_ = inference::GRPCInferenceService::NewStub(channel_);
  }

  void TearDown() override {
    classifier_.reset();
    kserve_.reset();
    channel_.reset();
    if (server_ != nullptr) server_->Shutdown(10'000);
    server_.reset();
    core_.reset();
  }

  const core::Servable& Servable(const std::string& name) const { return **core_->Find(name); }

  // Logits [classes] of `model` on the named test image, run in-process on a
  // batch of one. Thread-safe.
  torch::Tensor Expected(const std::string& model, const std::string& image) {
    std::lock_guard<std::mutex> lock(expected_mu_);
    const std::string key = model + "/" + image;
    auto it = expected_.find(key);
    if (it != expected_.end()) return it->second;
    const core::Servable& s = Servable(model);
    auto x = preprocess::Preprocess(Image(image), s.preprocess(), preprocess::ImageLimits());
    EXPECT_TRUE(x.ok()) << x.status();
    if (!x.ok()) return torch::Tensor();
    // The servable's own GhostNet, run directly on a batch of one.
    const auto& model_ref = dynamic_cast<const core::TorchModel&>(s.model());
    auto logits = model_ref.loaded().inference->Forward(x->unsqueeze(0));
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return torch::Tensor();
    return expected_[key] = (*logits)[0].clone();
  }

  ClassifyRequest Request(const std::string& model, const std::string& image, uint32_t top_k,
                          const std::string& id = "") const {
    ClassifyRequest r;
    r.set_model(model);
    r.set_image(Image(image));
    r.set_top_k(top_k);
    r.set_request_id(id);
    return r;
  }

  grpc::Status Classify(const ClassifyRequest& request, ClassifyResponse* response,
                        int64_t timeout_ms = kCallTimeoutMs) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, timeout_ms);
    return classifier_->Classify(&ctx, request, response);
  }

  // A request that must succeed and match the in-process model.
  void ExpectServes(const std::string& model, const std::string& image) {
    ClassifyResponse r;
    const grpc::Status s = Classify(Request(model, image, 3), &r);
    ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    ExpectPredictionsMatch(r, Expected(model, image), Servable(model).labels(), 3,
                           model + " " + image);
  }

  std::map<std::string, double> ScrapeMetrics() {
    const std::string http = HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_EQ(http.rfind("HTTP/1.1 200", 0), 0u) << http.substr(0, 200);
    const size_t body = http.find("\r\n\r\n");
    EXPECT_NE(body, std::string::npos);
    if (body == std::string::npos) return {};
    return ParseMetrics(http.substr(body + 4));
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<core::InferenceCore> core_;
  std::unique_ptr<service::GhostServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Classifier::Stub> classifier_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
  std::mutex expected_mu_;
  std::map<std::string, torch::Tensor> expected_;
};

// ---------------------------------------------------------------- Classify

using ClassifyTest = ServerTest;

TEST_F(ClassifyTest, ReturnsTopKOfTheInProcessModel) {
  for (const std::string& image : Photos()) {
    ClassifyResponse r;
    const grpc::Status s = Classify(Request(kBig, image, 7, "req-" + image), &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(r.model(), kBig);
    EXPECT_EQ(r.request_id(), "req-" + image);
    EXPECT_GE(r.batch_size(), 1u);
    EXPECT_LE(r.batch_size(), 8u);
    EXPECT_GT(r.timing().preprocess_us(), 0u);
    EXPECT_GT(r.timing().inference_us(), 0u);
    EXPECT_GE(r.timing().total_us(), r.timing().inference_us());
    EXPECT_GE(r.timing().total_us(), r.timing().preprocess_us());
    ExpectPredictionsMatch(r, Expected(kBig, image), config::ImageNetLabels(), 7, image);
  }
}

TEST_F(ClassifyTest, TopKZeroMeansFiveAndLabelsComeFromTheModel) {
  for (const char* model : {kBig, kTiny}) {
    ClassifyResponse r;
    const grpc::Status s = Classify(Request(model, "coffee.jpg", 0), &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(r.model(), model);
    EXPECT_EQ(r.request_id(), "");
    ExpectPredictionsMatch(r, Expected(model, "coffee.jpg"), Servable(model).labels(), 5, model);
  }
  // All ten classes of the small model, labelled c0..c9, probabilities summing to 1.
  ClassifyResponse r;
  ASSERT_TRUE(Classify(Request(kTiny, "astronaut.jpg", kTinyClasses), &r).ok());
  ExpectPredictionsMatch(r, Expected(kTiny, "astronaut.jpg"), TinyLabels(), kTinyClasses, "all");
  double sum = 0;
  for (const auto& p : r.predictions()) {
    EXPECT_EQ(p.label(), "c" + std::to_string(p.class_index()));
    sum += p.score();
  }
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

TEST_F(ClassifyTest, EveryPngVariantIsServedLikeInProcess) {
  for (const std::string& image : AllImages()) ExpectServes(kTiny, image);
}

// ---------------------------------------------------------------- Batching

class BatchingTest : public ServerTest {
 protected:
  TestServerOptions Options() const override {
    TestServerOptions o;
    // Long enough that concurrent requests reliably meet in one batch.
    o.max_delay_us = 50'000;
    o.preprocess_threads = 2;
    return o;
  }
};

TEST_F(BatchingTest, ConcurrentCallersEachGetTheirOwnAnswer) {
  constexpr int kThreads = 16;
  constexpr int kPerThread = 4;
  const std::vector<std::string>& images = AllImages();
  // Expectations first, so the threads only compare.
  for (const auto& image : images) {
    Expected(kBig, image);
    Expected(kTiny, image);
  }
  std::atomic<int> ok{0};
  std::atomic<uint32_t> largest_batch{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::Classifier::NewStub(channel_);
      for (int i = 0; i < kPerThread; ++i) {
        const int n = t * kPerThread + i;
        const std::string& image = images[static_cast<size_t>(n) % images.size()];
        const std::string model = (n / 3) % 2 == 0 ? kBig : kTiny;
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        ClassifyRequest req = Request(model, image, 5, id);
        ClassifyResponse r;
        grpc::ClientContext ctx;
        SetTimeout(ctx, kCallTimeoutMs);
        const grpc::Status s = stub->Classify(&ctx, req, &r);
        if (!s.ok()) {
          failures[t] += id + ": " + s.error_message() + "\n";
          continue;
        }
        // Compare on this thread and report on the main one.
        const torch::Tensor probs = Probabilities(Expected(model, image));
        auto [values, indices] = probs.topk(5);
        std::string bad;
        if (r.model() != model) bad += " model " + r.model();
        if (r.request_id() != id) bad += " request_id " + r.request_id();
        if (r.predictions_size() != 5)
          bad += " predictions " + std::to_string(r.predictions_size());
        for (int k = 0; k < r.predictions_size() && k < 5; ++k) {
          const auto& p = r.predictions(k);
          if (p.class_index() >= probs.size(0) ||
              std::abs(p.score() - probs[p.class_index()].item<double>()) >
                  ScoreTolerance(probs[p.class_index()].item<double>()) ||
              std::abs(p.score() - values[k].item<double>()) >
                  ScoreTolerance(values[k].item<double>()) ||
              p.label() != Servable(model).labels()[p.class_index()]) {
            bad += " rank " + std::to_string(k) + " class " + std::to_string(p.class_index()) +
                   " score " + std::to_string(p.score());
          }
        }
        if (!bad.empty()) {
          failures[t] += id + " (" + model + ", " + image + "):" + bad + "\n";
          continue;
        }
        ok.fetch_add(1);
        uint32_t seen = largest_batch.load();
        while (r.batch_size() > seen &&
               !largest_batch.compare_exchange_weak(seen, r.batch_size())) {
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& f : failures) EXPECT_EQ(f, "");
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  EXPECT_GT(largest_batch.load(), 1u) << "no two requests ever shared a batch";
  EXPECT_LE(largest_batch.load(), 8u);
}

// ---------------------------------------------------------------- Errors

using ErrorTest = ServerTest;

TEST_F(ErrorTest, EmptyImageIsInvalidArgument) {
  ClassifyRequest req = Request(kBig, "chelsea.jpg", 5);
  req.clear_image();
  ClassifyResponse r;
  EXPECT_EQ(Classify(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectServes(kBig, "chelsea.jpg");
}

TEST_F(ErrorTest, GarbageBytesAreInvalidArgument) {
  ClassifyRequest req = Request(kBig, "chelsea.jpg", 5);
  req.set_image(std::string(5000, '\x5a'));
  ClassifyResponse r;
  EXPECT_EQ(Classify(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A JPEG whose data stops right after the header.
  req.set_image(Image("chelsea.jpg").substr(0, 300));
  EXPECT_EQ(Classify(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectServes(kBig, "chelsea.jpg");
}

TEST_F(ErrorTest, UnknownModelIsNotFound) {
  ClassifyResponse r;
  const grpc::Status s = Classify(Request("resnet_50", "chelsea.jpg", 5), &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  // The message names the models that are served.
  EXPECT_NE(s.error_message().find(kBig), std::string::npos) << s.error_message();
  ExpectServes(kTiny, "chelsea.jpg");
}

TEST_F(ErrorTest, TopKAboveClassesIsInvalidArgument) {
  ClassifyResponse r;
  EXPECT_EQ(Classify(Request(kTiny, "chelsea.jpg", kTinyClasses + 1), &r).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Classify(Request(kBig, "chelsea.jpg", 1001), &r).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Exactly the number of classes is allowed.
  ASSERT_TRUE(Classify(Request(kTiny, "chelsea.jpg", kTinyClasses), &r).ok());
  EXPECT_EQ(r.predictions_size(), kTinyClasses);
}

TEST_F(ErrorTest, HighPriorityRequestIsServedLikeAnyOther) {
  ClassifyRequest req = Request(kBig, "chelsea.jpg", 3);
  req.set_priority(v1::PRIORITY_HIGH);
  ClassifyResponse r;
  ASSERT_TRUE(Classify(req, &r).ok());
  ExpectPredictionsMatch(r, Expected(kBig, "chelsea.jpg"), Servable(kBig).labels(), 3, "high");
}

TEST_F(ErrorTest, OverlongRequestIdIsInvalidArgument) {
  ClassifyResponse r;
  EXPECT_EQ(Classify(Request(kBig, "chelsea.jpg", 5, std::string(129, 'x')), &r).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Classify(Request(kBig, "chelsea.jpg", 5, std::string(128, 'x')), &r).ok());
  EXPECT_EQ(r.request_id(), std::string(128, 'x'));
}

TEST_F(ErrorTest, MessageAboveTheLimitIsResourceExhausted) {
  // The fixture's limit is 1 MiB; a valid JPEG padded past it.
  ClassifyRequest req = Request(kBig, "chelsea.jpg", 5);
  req.set_image(Image("chelsea.jpg") + std::string((3 << 20) / 2, '\0'));
  ClassifyResponse r;
  EXPECT_EQ(Classify(req, &r).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ExpectServes(kBig, "chelsea.jpg");
}

// ---------------------------------------------------------------- Queue full

class QueueFullTest : public ServerTest {
 protected:
  TestServerOptions Options() const override {
    TestServerOptions o;
    o.max_queue_size = 1;
    o.preprocess_queue = 1;
    o.preprocess_threads = 1;
    // The one queued image holds its slot for a while.
    o.max_delay_us = 200'000;
    return o;
  }
};

TEST_F(QueueFullTest, OverflowIsUnavailableAndEveryCallIsAnswered) {
  constexpr int kCalls = 16;
  std::vector<std::unique_ptr<AsyncClassify>> calls;
  for (int i = 0; i < kCalls; ++i) {
    auto c = std::make_unique<AsyncClassify>();
    c->image_name = Photos()[static_cast<size_t>(i) % Photos().size()];
    c->request = Request(kBig, c->image_name, 3, std::to_string(i));
    calls.push_back(std::move(c));
  }
  ASSERT_TRUE(RunAll(classifier_.get(), calls)) << "some call was never answered";
  int ok = 0, unavailable = 0;
  for (const auto& c : calls) {
    if (c->status.ok()) {
      ++ok;
      EXPECT_EQ(c->response.request_id(), c->request.request_id());
      ExpectPredictionsMatch(c->response, Expected(kBig, c->image_name), config::ImageNetLabels(),
                             3, c->image_name);
    } else {
      EXPECT_EQ(c->status.error_code(), grpc::StatusCode::UNAVAILABLE) << c->status.error_message();
      ++unavailable;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(unavailable, 1);
  EXPECT_EQ(ok + unavailable, kCalls);
  // Refused calls were never decoded, and each refusal is counted by reason.
  std::map<std::string, double> m = ScrapeMetrics();
  const std::string model = "{model=\"" + std::string(kBig) + "\"}";
  EXPECT_EQ(m["ghostserve_decodes_total" + model], ok);
  double refusals = 0;
  for (const char* reason : {"model_budget", "byte_budget", "preprocess_queue"}) {
    refusals += m["ghostserve_refusals_total{model=\"" + std::string(kBig) + "\",reason=\"" +
                  reason + "\"}"];
  }
  EXPECT_EQ(refusals, unavailable);
  EXPECT_EQ(m["ghostserve_admitted_images" + model], 0);
  EXPECT_EQ(m["ghostserve_held_input_bytes"], 0);
  // Refusals are momentary: once the queue drains the server serves again.
  ExpectServes(kBig, "coffee.jpg");
}

// ---------------------------------------------------------------- Deadlines

// One preprocessing thread and room for the slow 5000x5000 PNG: a slow image
// holds up those behind it, so requests stay queued or in flight on demand.
class SlowDecodeTest : public ServerTest {
 protected:
  TestServerOptions Options() const override {
    TestServerOptions o;
    o.preprocess_threads = 1;
    o.max_receive_message_bytes = 16 << 20;
    return o;
  }
};

using DeadlineTest = SlowDecodeTest;

TEST_F(DeadlineTest, ExpiredRequestIsDeadlineExceededAndNeverRunsTheModel) {
  std::vector<std::unique_ptr<AsyncClassify>> slow;
  slow.push_back(std::make_unique<AsyncClassify>());
  slow[0]->image_name = kSlowImage;
  slow[0]->request = Request(kBig, kSlowImage, 3, "slow");
  Expected(kBig, kSlowImage);
  AsyncCalls async(classifier_.get());
  async.Start(slow[0].get());
  for (int i = 0; i < 5000 && core_->inflight() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(core_->inflight(), 1);

  // Waits behind the slow image and expires there.
  ClassifyResponse r;
  const grpc::Status expired = Classify(Request(kBig, "coffee.jpg", 5), &r, 50);
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << expired.error_message();
  ASSERT_TRUE(async.Wait());
  ASSERT_TRUE(slow[0]->status.ok()) << slow[0]->status.error_message();
  ExpectPredictionsMatch(slow[0]->response, Expected(kBig, kSlowImage), config::ImageNetLabels(), 3,
                         "slow");

  // The server answers the expired request (so its metrics count it) once
  // the preprocessing thread reaches it.
  const std::string deadline_series =
      "ghostserve_requests_total{code=\"DEADLINE_EXCEEDED\",model=\"ghostnet_050\",protocol="
      "\"grpc\"}";
  std::map<std::string, double> m;
  for (int i = 0; i < 100 && core_->inflight() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(core_->inflight(), 0);
  m = ScrapeMetrics();
  EXPECT_EQ(m[deadline_series], 1) << "expired request not counted as DEADLINE_EXCEEDED";
  EXPECT_EQ(
      m.count(
          "ghostserve_requests_total{code=\"CANCELLED\",model=\"ghostnet_050\",protocol=\"grpc\"}"),
      0u)
      << "an expired deadline was reported as a cancellation";
  EXPECT_EQ(m["ghostserve_requests_total{code=\"OK\",model=\"ghostnet_050\",protocol=\"grpc\"}"],
            1);
  // Only the slow image went through the model.
  EXPECT_EQ(m["ghostserve_batch_size_sum{model=\"ghostnet_050\"}"], 1)
      << "an expired request ran through the model";

  // A deadline no server could meet.
  EXPECT_EQ(Classify(Request(kBig, "chelsea.jpg", 5), &r, 1).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  // A request with time to spare still succeeds.
  ExpectServes(kBig, "chelsea.jpg");
}

// ---------------------------------------------------------------- Streaming

using StreamTest = ServerTest;

TEST_F(StreamTest, AnswersInRequestOrder) {
  constexpr int kRequests = 20;
  grpc::ClientContext ctx;
  SetTimeout(ctx, kCallTimeoutMs);
  auto stream = classifier_->ClassifyStream(&ctx);
  std::vector<std::pair<std::string, std::string>> sent;  // model, image
  // Writes run on their own thread so the server's answers never wait on
  // a client that is still writing.
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      const std::string& image = AllImages()[static_cast<size_t>(i) % AllImages().size()];
      const std::string model = i % 2 == 0 ? kBig : kTiny;
      if (!stream->Write(Request(model, image, 4, "s" + std::to_string(i)))) break;
    }
    stream->WritesDone();
  });
  for (int i = 0; i < kRequests; ++i) {
    sent.emplace_back(i % 2 == 0 ? kBig : kTiny,
                      AllImages()[static_cast<size_t>(i) % AllImages().size()]);
  }
  std::vector<ClassifyResponse> got;
  ClassifyResponse r;
  while (stream->Read(&r)) got.push_back(r);
  writer.join();
  const grpc::Status s = stream->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(got.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    const auto& [model, image] = sent[static_cast<size_t>(i)];
    EXPECT_EQ(got[i].request_id(), "s" + std::to_string(i));
    EXPECT_EQ(got[i].model(), model);
    ExpectPredictionsMatch(got[i], Expected(model, image), Servable(model).labels(), 4,
                           "s" + std::to_string(i));
  }
}

TEST_F(StreamTest, BadImageEndsTheStreamWithInvalidArgument) {
  grpc::ClientContext ctx;
  SetTimeout(ctx, kCallTimeoutMs);
  auto stream = classifier_->ClassifyStream(&ctx);
  std::thread writer([&] {
    for (int i = 0; i < 6; ++i) {
      ClassifyRequest req = Request(kBig, "coffee.jpg", 3, "s" + std::to_string(i));
      if (i == 3) req.set_image("definitely not an image");
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  std::vector<ClassifyResponse> got;
  ClassifyResponse r;
  while (stream->Read(&r)) got.push_back(r);
  writer.join();
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  // Only answers to requests before the bad one, in order.
  EXPECT_LE(got.size(), 3u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].request_id(), "s" + std::to_string(i));
    ExpectPredictionsMatch(got[i], Expected(kBig, "coffee.jpg"), config::ImageNetLabels(), 3,
                           got[i].request_id());
  }
  ExpectServes(kBig, "coffee.jpg");
}

// ---------------------------------------------------------------- ListModels

using ListModelsTest = ServerTest;

TEST_F(ListModelsTest, DescribesBothModels) {
  grpc::ClientContext ctx;
  SetTimeout(ctx, kCallTimeoutMs);
  v1::ListModelsResponse r;
  ASSERT_TRUE(classifier_->ListModels(&ctx, v1::ListModelsRequest(), &r).ok());
  ASSERT_EQ(r.models_size(), 2);
  std::map<std::string, v1::ModelInfo> by_name;
  for (const auto& m : r.models()) by_name[m.name()] = m;
  ASSERT_EQ(by_name.count(kBig), 1u);
  ASSERT_EQ(by_name.count(kTiny), 1u);
  const v1::ModelInfo& big = by_name[kBig];
  const v1::ModelInfo& tiny = by_name[kTiny];
  EXPECT_EQ(big.parameters(), kGhostNet050Parameters);
  // Same body, 10-class head instead of 1000: 990 fewer rows of 1280 + bias.
  EXPECT_EQ(tiny.parameters(), kGhostNet050Parameters - 990u * 1281u);
  for (const auto* m : {&big, &tiny}) {
    SCOPED_TRACE(m->name());
    EXPECT_GT(m->macs(), 0u);
    EXPECT_FALSE(m->trained());
    EXPECT_EQ(m->weights_source().rfind("untrained", 0), 0u) << m->weights_source();
    EXPECT_EQ(m->input_size(), 224u);
    EXPECT_EQ(m->input_channels(), 3u);
    EXPECT_FLOAT_EQ(m->width(), 0.5f);
    EXPECT_TRUE(m->ready());
    EXPECT_EQ(m->max_batch_size(), 8u);
    EXPECT_EQ(m->preprocess().resize_shorter_side(), 256u);
    EXPECT_EQ(m->preprocess().input_size(), 224u);
    EXPECT_EQ(m->preprocess().mean_size(), 3);
    EXPECT_EQ(m->preprocess().std_size(), 3);
    EXPECT_EQ(m->preprocess().color(), "rgb");
  }
  EXPECT_EQ(big.num_classes(), 1000u);
  EXPECT_EQ(tiny.num_classes(), static_cast<uint32_t>(kTinyClasses));
  EXPECT_GT(big.macs(), tiny.macs());
}

// ---------------------------------------------------------------- KServe v2

using KServeTest = ServerTest;

TEST_F(KServeTest, ServerLiveReadyAndMetadata) {
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(kserve_->ServerLive(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(kserve_->ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse r;
    ASSERT_TRUE(kserve_->ServerMetadata(&ctx, {}, &r).ok());
    EXPECT_EQ(r.name(), "ghostserve");
    EXPECT_EQ(r.version(), service::ServerOptions().version);
    // Triton's extension names for what is served (tritonclient reads them).
    for (const char* e :
         {"classification", "model_configuration", "statistics", "model_repository"}) {
      EXPECT_NE(std::find(r.extensions().begin(), r.extensions().end(), e), r.extensions().end())
          << e;
    }
  }
}

TEST_F(KServeTest, ModelReadyKnowsTheServedModels) {
  for (const char* name : {kBig, kTiny}) {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest req;
    req.set_name(name);
    inference::ModelReadyResponse r;
    ASSERT_TRUE(kserve_->ModelReady(&ctx, req, &r).ok()) << name;
    EXPECT_TRUE(r.ready()) << name;
  }
  // As Triton: an unknown model or version is not ready, and not an error.
  for (const auto& [name, version] : std::vector<std::pair<std::string, std::string>>{
           {"ghostnet_999", ""}, {kBig, "2"}, {kBig, "1"}}) {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest req;
    req.set_name(name);
    req.set_version(version);
    inference::ModelReadyResponse r;
    ASSERT_TRUE(kserve_->ModelReady(&ctx, req, &r).ok()) << name << " " << version;
    EXPECT_EQ(r.ready(), version == "1") << name << " " << version;
  }
}

TEST_F(KServeTest, ModelMetadataOfAVersionThatDoesNotExistIsNotFound) {
  grpc::ClientContext ctx;
  inference::ModelMetadataRequest req;
  req.set_name(kBig);
  req.set_version("2");
  inference::ModelMetadataResponse r;
  const grpc::Status s = kserve_->ModelMetadata(&ctx, req, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("has no version '2'"), std::string::npos) << s.error_message();
  grpc::ClientContext ctx1;
  req.set_version("1");
  EXPECT_TRUE(kserve_->ModelMetadata(&ctx1, req, &r).ok());
  EXPECT_EQ(r.versions(0), "1");
}

TEST_F(KServeTest, ModelMetadataListsInputsAndOutputs) {
  for (const auto& [name, classes] :
       std::vector<std::pair<std::string, int64_t>>{{kBig, 1000}, {kTiny, kTinyClasses}}) {
    SCOPED_TRACE(name);
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest req;
    req.set_name(name);
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(kserve_->ModelMetadata(&ctx, req, &r).ok());
    EXPECT_EQ(r.name(), name);
    std::map<std::string, inference::ModelMetadataResponse::TensorMetadata> inputs, outputs;
    for (const auto& t : r.inputs()) inputs[t.name()] = t;
    for (const auto& t : r.outputs()) outputs[t.name()] = t;
    ASSERT_EQ(inputs.count("images"), 1u);
    EXPECT_EQ(inputs["images"].datatype(), "BYTES");
    EXPECT_EQ(
        std::vector<int64_t>(inputs["images"].shape().begin(), inputs["images"].shape().end()),
        (std::vector<int64_t>{-1}));
    ASSERT_EQ(inputs.count("input"), 1u);
    EXPECT_EQ(inputs["input"].datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(inputs["input"].shape().begin(), inputs["input"].shape().end()),
              (std::vector<int64_t>{-1, 3, 224, 224}));
    for (const char* out : {"logits", "probabilities"}) {
      ASSERT_EQ(outputs.count(out), 1u) << out;
      EXPECT_EQ(outputs[out].datatype(), "FP32");
      EXPECT_EQ(std::vector<int64_t>(outputs[out].shape().begin(), outputs[out].shape().end()),
                (std::vector<int64_t>{-1, classes}));
    }
  }
  grpc::ClientContext ctx;
  inference::ModelMetadataRequest req;
  req.set_name("nope");
  inference::ModelMetadataResponse r;
  EXPECT_EQ(kserve_->ModelMetadata(&ctx, req, &r).error_code(), grpc::StatusCode::NOT_FOUND);
}

// The output tensor `name` of a ModelInfer response as [rows, cols].
torch::Tensor Output(const inference::ModelInferResponse& r, const std::string& name) {
  EXPECT_EQ(r.outputs_size(), r.raw_output_contents_size());
  for (int i = 0; i < r.outputs_size() && i < r.raw_output_contents_size(); ++i) {
    const auto& o = r.outputs(i);
    if (o.name() != name) continue;
    EXPECT_EQ(o.datatype(), "FP32");
    EXPECT_EQ(o.shape_size(), 2);
    if (o.shape_size() != 2) return torch::Tensor();
    const std::string& raw = r.raw_output_contents(i);
    EXPECT_EQ(static_cast<int64_t>(raw.size()), o.shape(0) * o.shape(1) * 4);
    if (static_cast<int64_t>(raw.size()) != o.shape(0) * o.shape(1) * 4) return torch::Tensor();
    torch::Tensor t = torch::empty({o.shape(0), o.shape(1)});
    std::memcpy(t.data_ptr<float>(), raw.data(), raw.size());
    return t;
  }
  ADD_FAILURE() << "no output " << name;
  return torch::Tensor();
}

class KServeInferTest : public ServerTest {
 protected:
  TestServerOptions Options() const override {
    TestServerOptions o;
    // Room for a few preprocessed FP32 images (602 KB each).
    o.max_receive_message_bytes = 8 << 20;
    return o;
  }

  // Expected logits [N, classes] of `model` for `images`, in-process.
  torch::Tensor ExpectedBatch(const std::string& model, const std::vector<std::string>& images) {
    std::vector<torch::Tensor> rows;
    for (const auto& image : images) rows.push_back(Expected(model, image));
    return torch::stack(rows);
  }

  // Preprocessed [N, 3, 224, 224] tensor, NCHW row-major.
  torch::Tensor Preprocessed(const std::string& model, const std::vector<std::string>& images) {
    std::vector<torch::Tensor> xs;
    for (const auto& image : images) {
      auto x = preprocess::Preprocess(Image(image), Servable(model).preprocess(),
                                      preprocess::ImageLimits());
      EXPECT_TRUE(x.ok());
      xs.push_back(*x);
    }
    return torch::stack(xs).contiguous();
  }

  grpc::Status Infer(const inference::ModelInferRequest& req, inference::ModelInferResponse* r) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, kCallTimeoutMs);
    return kserve_->ModelInfer(&ctx, req, r);
  }

  static inference::ModelInferRequest Base(const std::string& model, const std::string& datatype,
                                           std::vector<int64_t> shape) {
    inference::ModelInferRequest req;
    req.set_model_name(model);
    req.set_id("kserve-1");
    auto* in = req.add_inputs();
    in->set_name(datatype == "BYTES" ? "images" : "input");
    in->set_datatype(datatype);
    for (int64_t d : shape) in->add_shape(d);
    return req;
  }

  static void ExpectLogitsMatch(const torch::Tensor& got, const torch::Tensor& want) {
    ASSERT_TRUE(got.defined());
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LT(MaxRelativeError(got, want), 1e-4);
  }
};

TEST_F(KServeInferTest, BytesContentsGiveInProcessLogits) {
  const std::vector<std::string> images = Photos();
  inference::ModelInferRequest req = Base(kBig, "BYTES", {3});
  for (const auto& image : images)
    req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image(image));
  req.add_outputs()->set_name("logits");
  inference::ModelInferResponse r;
  const grpc::Status s = Infer(req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.model_name(), kBig);
  EXPECT_EQ(r.id(), "kserve-1");
  // Only the requested output.
  ASSERT_EQ(r.outputs_size(), 1);
  ExpectLogitsMatch(Output(r, "logits"), ExpectedBatch(kBig, images));
}

TEST_F(KServeInferTest, PriorityParameterIsAcceptedAsTritonSpellsIt) {
  inference::ModelInferRequest req = Base(kBig, "BYTES", {1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
  req.add_outputs()->set_name("logits");
  (*req.mutable_parameters())["priority"].set_int64_param(1);
  inference::ModelInferResponse r;
  const grpc::Status s = Infer(req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectLogitsMatch(Output(r, "logits"), ExpectedBatch(kBig, {"coffee.jpg"}));
  (*req.mutable_parameters())["priority"].set_string_param("high");
  EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(KServeTest, ModelConfigDescribesTheModelAsTritonDoes) {
  grpc::ClientContext ctx;
  inference::ModelConfigRequest req;
  req.set_name(kTiny);
  inference::ModelConfigResponse r;
  ASSERT_TRUE(kserve_->ModelConfig(&ctx, req, &r).ok());
  const inference::ModelConfig& c = r.config();
  EXPECT_EQ(c.name(), kTiny);
  EXPECT_EQ(c.platform(), "pytorch_libtorch");
  EXPECT_EQ(c.backend(), "pytorch");
  EXPECT_EQ(c.max_batch_size(), Servable(kTiny).max_batch_size());
  ASSERT_EQ(c.input_size(), 2);
  EXPECT_EQ(c.input(0).name(), "images");
  EXPECT_EQ(c.input(0).data_type(), inference::TYPE_STRING);
  EXPECT_EQ(c.input(1).name(), "input");
  EXPECT_EQ(c.input(1).data_type(), inference::TYPE_FP32);
  EXPECT_EQ(c.input(1).format(), inference::ModelInput::FORMAT_NCHW);
  const auto shape = Servable(kTiny).input_shape();
  EXPECT_EQ(std::vector<int64_t>(c.input(1).dims().begin(), c.input(1).dims().end()), shape);
  ASSERT_EQ(c.output_size(), 2);
  for (const auto& out : c.output()) {
    EXPECT_EQ(out.data_type(), inference::TYPE_FP32);
    ASSERT_EQ(out.dims_size(), 1);
    EXPECT_EQ(out.dims(0), kTinyClasses);
  }
  ASSERT_EQ(c.instance_group_size(), 1);
  EXPECT_EQ(c.instance_group(0).kind(), inference::ModelInstanceGroup::KIND_CPU);
  EXPECT_GE(c.instance_group(0).count(), 1);
  ASSERT_TRUE(c.has_dynamic_batching());
  EXPECT_EQ(c.dynamic_batching().max_queue_delay_microseconds(),
            static_cast<uint64_t>(Servable(kTiny).batcher().options().max_delay_us));
  EXPECT_EQ(c.dynamic_batching().priority_levels(), 2u);
  grpc::ClientContext ctx2;
  req.set_name("nope");
  EXPECT_EQ(kserve_->ModelConfig(&ctx2, req, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx3;
  req.set_name(kTiny);
  req.set_version("3");
  EXPECT_EQ(kserve_->ModelConfig(&ctx3, req, &r).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(KServeTest, RepositoryIndexListsEveryModelReady) {
  grpc::ClientContext ctx;
  inference::RepositoryIndexRequest req;
  req.set_ready(true);
  inference::RepositoryIndexResponse r;
  ASSERT_TRUE(kserve_->RepositoryIndex(&ctx, req, &r).ok());
  std::map<std::string, std::string> states;
  for (const auto& m : r.models()) {
    EXPECT_EQ(m.version(), "1");
    states[m.name()] = m.state();
  }
  EXPECT_EQ(states, (std::map<std::string, std::string>{{kBig, "READY"}, {kTiny, "READY"}}));
}

TEST_F(KServeInferTest, InputsMustBeNamedAsMetadataSays) {
  inference::ModelInferRequest req = Base(kTiny, "BYTES", {1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
  inference::ModelInferResponse r;
  ASSERT_TRUE(Infer(req, &r).ok());
  req.mutable_inputs(0)->set_name("INPUT0");
  grpc::Status s = Infer(req, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("unexpected inference input 'INPUT0'"), std::string::npos)
      << s.error_message();
  req.mutable_inputs(0)->set_name("input");  // the FP32 input's name on BYTES
  s = Infer(req, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("input 'input' must have datatype FP32, got BYTES"),
            std::string::npos)
      << s.error_message();
}

// Triton's classification extension: class_count=K on an output gives BYTES
// [N, K] of "score:index:label", best first, scores from that output.
TEST_F(KServeInferTest, ClassificationParameterGivesScoreIndexLabelStrings) {
  const std::vector<std::string> images = {"coffee.jpg", "astronaut.jpg"};
  inference::ModelInferRequest req = Base(kBig, "BYTES", {2});
  for (const auto& image : images) {
    req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image(image));
  }
  auto* logits = req.add_outputs();
  logits->set_name("logits");
  (*logits->mutable_parameters())["classification"].set_int64_param(3);
  auto* probs = req.add_outputs();
  probs->set_name("probabilities");
  (*probs->mutable_parameters())["classification"].set_int64_param(2);
  inference::ModelInferResponse r;
  const grpc::Status s = Infer(req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(r.outputs_size(), 2);
  ASSERT_EQ(r.raw_output_contents_size(), 2);
  const torch::Tensor want = ExpectedBatch(kBig, images);
  const auto& labels = config::ImageNetLabels();
  for (int o = 0; o < 2; ++o) {
    const auto& out = r.outputs(o);
    const int64_t k = o == 0 ? 3 : 2;
    SCOPED_TRACE(out.name());
    EXPECT_EQ(out.datatype(), "BYTES");
    ASSERT_EQ(out.shape_size(), 2);
    EXPECT_EQ(out.shape(0), 2);
    EXPECT_EQ(out.shape(1), k);
    const std::string& raw = r.raw_output_contents(o);
    size_t pos = 0;
    for (int64_t i = 0; i < 2; ++i) {
      const torch::Tensor row = o == 0 ? want[i] : torch::softmax(want[i], 0);
      const torch::Tensor best = std::get<1>(row.topk(k));
      for (int64_t j = 0; j < k; ++j) {
        ASSERT_LE(pos + 4, raw.size());
        uint32_t len;
        std::memcpy(&len, raw.data() + pos, 4);
        const std::string element = raw.substr(pos + 4, len);
        pos += 4 + len;
        const int64_t index = best[j].item<int64_t>();
        const size_t c1 = element.find(':'), c2 = element.find(':', c1 + 1);
        ASSERT_NE(c2, std::string::npos) << element;
        EXPECT_NEAR(std::stod(element.substr(0, c1)), row[index].item<float>(),
                    1e-4 * std::max(1.0f, std::abs(row[index].item<float>())))
            << element;
        EXPECT_EQ(element.substr(c1 + 1, c2 - c1 - 1), std::to_string(index)) << element;
        EXPECT_EQ(element.substr(c2 + 1), labels[static_cast<size_t>(index)]) << element;
      }
    }
    EXPECT_EQ(pos, raw.size());
  }
  (*logits->mutable_parameters())["classification"].set_int64_param(0);
  EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Triton's ModelStreamInfer: one response per request, matched by id; a bad
// request answers with error_message and the stream goes on.
TEST_F(KServeInferTest, StreamInferAnswersEachRequestAndReportsErrorsInBand) {
  grpc::ClientContext ctx;
  SetTimeout(ctx, kCallTimeoutMs);
  auto stream = kserve_->ModelStreamInfer(&ctx);
  const std::vector<std::string> images = {"coffee.jpg", "astronaut.jpg", "chelsea_rgba.png"};
  for (size_t i = 0; i < images.size(); ++i) {
    inference::ModelInferRequest req = Base(kTiny, "BYTES", {1});
    req.set_id("ok-" + std::to_string(i));
    req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image(images[i]));
    req.add_outputs()->set_name("logits");
    ASSERT_TRUE(stream->Write(req));
  }
  inference::ModelInferRequest bad = Base(kTiny, "BYTES", {1});
  bad.set_id("bad");
  bad.mutable_inputs(0)->set_name("INPUT0");
  bad.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, inference::ModelStreamInferResponse> got;
  inference::ModelStreamInferResponse r;
  while (stream->Read(&r)) got[r.infer_response().id()] = r;
  const grpc::Status s = stream->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(got.size(), 4u);
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& one = got["ok-" + std::to_string(i)];
    EXPECT_TRUE(one.error_message().empty()) << one.error_message();
    EXPECT_EQ(one.infer_response().model_name(), kTiny);
    ExpectLogitsMatch(Output(one.infer_response(), "logits"), ExpectedBatch(kTiny, {images[i]}));
  }
  EXPECT_NE(got["bad"].error_message().find("unexpected inference input 'INPUT0'"),
            std::string::npos)
      << got["bad"].error_message();
}

TEST_F(KServeInferTest, StreamCancelledWithRequestsInFlightLeavesTheServerServing) {
  for (int round = 0; round < 3; ++round) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, kCallTimeoutMs);
    auto stream = kserve_->ModelStreamInfer(&ctx);
    for (int i = 0; i < 12; ++i) {
      inference::ModelInferRequest req = Base(kTiny, "BYTES", {1});
      req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
      stream->Write(req);
    }
    ctx.TryCancel();
    inference::ModelStreamInferResponse r;
    while (stream->Read(&r)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  inference::ModelInferRequest req = Base(kTiny, "BYTES", {1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
  inference::ModelInferResponse r;
  EXPECT_TRUE(Infer(req, &r).ok());
}

// ModelStatistics equal what this test sent: requests, images, batches.
TEST_F(KServeInferTest, StatisticsCountWhatWasSent) {
  auto stats = [&](const std::string& name) {
    grpc::ClientContext ctx;
    inference::ModelStatisticsRequest req;
    req.set_name(name);
    inference::ModelStatisticsResponse r;
    const grpc::Status s = kserve_->ModelStatistics(&ctx, req, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(r.model_stats_size(), 1);
    return r.model_stats_size() == 1 ? r.model_stats(0) : inference::ModelStatistics();
  };
  const inference::ModelStatistics before = stats(kTiny);
  EXPECT_EQ(before.inference_stats().success().count(), 0u);
  EXPECT_EQ(before.execution_count(), 0u);  // warm-up does not count
  inference::ModelInferResponse r;
  for (int images : {1, 2}) {
    inference::ModelInferRequest req = Base(kTiny, "BYTES", {images});
    for (int i = 0; i < images; ++i) {
      req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
    }
    ASSERT_TRUE(Infer(req, &r).ok());
  }
  inference::ModelInferRequest bad = Base(kTiny, "BYTES", {1});
  bad.mutable_inputs(0)->mutable_contents()->add_bytes_contents("not an image");
  EXPECT_EQ(Infer(bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const inference::ModelStatistics after = stats(kTiny);
  EXPECT_EQ(after.name(), kTiny);
  EXPECT_EQ(after.version(), "1");
  const auto& inf = after.inference_stats();
  EXPECT_EQ(inf.success().count(), 2u);
  EXPECT_EQ(inf.fail().count(), 1u);
  EXPECT_EQ(inf.queue().count(), 2u);
  EXPECT_EQ(inf.compute_input().count(), 2u);
  EXPECT_EQ(inf.compute_infer().count(), 2u);
  EXPECT_GT(inf.success().ns(), 0u);
  EXPECT_GT(inf.compute_infer().ns(), 0u);
  EXPECT_GE(inf.success().ns(), inf.compute_infer().ns());
  EXPECT_EQ(after.inference_count(), 3u);
  uint64_t executions = 0, images = 0;
  for (const auto& b : after.batch_stats()) {
    executions += b.compute_infer().count();
    images += b.batch_size() * b.compute_infer().count();
  }
  EXPECT_EQ(executions, after.execution_count());
  EXPECT_EQ(images, 3u);
  EXPECT_GE(after.execution_count(), 2u);
  EXPECT_GT(after.last_inference(), 1'700'000'000'000u);  // ms since the epoch
  // The other model saw none of it; no name lists both.
  EXPECT_EQ(stats(kBig).inference_count(), 0u);
  grpc::ClientContext ctx;
  inference::ModelStatisticsResponse all;
  ASSERT_TRUE(kserve_->ModelStatistics(&ctx, {}, &all).ok());
  EXPECT_EQ(all.model_stats_size(), 2);
}

TEST_F(KServeInferTest, RawLengthPrefixedBytesGiveInProcessLogits) {
  const std::vector<std::string> images = {"astronaut.jpg", "chelsea_rgba.png", "coffee.jpg",
                                           "chelsea_gray.png"};
  inference::ModelInferRequest req = Base(kTiny, "BYTES", {static_cast<int64_t>(images.size())});
  std::string raw;
  for (const auto& image : images) {
    const uint32_t len = static_cast<uint32_t>(Image(image).size());
    for (int b = 0; b < 4; ++b) raw.push_back(static_cast<char>((len >> (8 * b)) & 0xff));
    raw += Image(image);
  }
  req.add_raw_input_contents(raw);
  inference::ModelInferResponse r;
  const grpc::Status s = Infer(req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // No outputs named: both.
  ASSERT_EQ(r.outputs_size(), 2);
  const torch::Tensor want = ExpectedBatch(kTiny, images);
  ExpectLogitsMatch(Output(r, "logits"), want);
  const torch::Tensor probs = Output(r, "probabilities");
  ASSERT_TRUE(probs.defined());
  EXPECT_LT((probs - torch::softmax(want, 1)).abs().max().item<double>(), 1e-5);
}

TEST_F(KServeInferTest, Fp32RawContentsGiveInProcessLogits) {
  const std::vector<std::string> images = {"coffee.jpg", "chelsea.jpg"};
  const torch::Tensor x = Preprocessed(kBig, images);
  inference::ModelInferRequest req = Base(kBig, "FP32", {2, 3, 224, 224});
  req.add_raw_input_contents(std::string(static_cast<const char*>(x.data_ptr()),
                                         static_cast<size_t>(x.numel()) * sizeof(float)));
  req.add_outputs()->set_name("logits");
  inference::ModelInferResponse r;
  const grpc::Status s = Infer(req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectLogitsMatch(Output(r, "logits"), ExpectedBatch(kBig, images));
}

TEST_F(KServeInferTest, Fp32ContentsGiveInProcessLogits) {
  const std::vector<std::string> images = {"astronaut.jpg"};
  const torch::Tensor x = Preprocessed(kTiny, images);
  inference::ModelInferRequest req = Base(kTiny, "FP32", {1, 3, 224, 224});
  auto* values = req.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents();
  values->Add(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
  req.add_outputs()->set_name("logits");
  inference::ModelInferResponse r;
  const grpc::Status s = Infer(req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectLogitsMatch(Output(r, "logits"), ExpectedBatch(kTiny, images));
}

TEST_F(KServeInferTest, MisshapenInputsAreInvalidArgument) {
  inference::ModelInferResponse r;
  {
    // Wrong spatial size.
    inference::ModelInferRequest req = Base(kBig, "FP32", {1, 3, 200, 200});
    req.add_raw_input_contents(std::string(3 * 200 * 200 * 4, '\0'));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // Rank 3.
    inference::ModelInferRequest req = Base(kBig, "FP32", {3, 224, 224});
    req.add_raw_input_contents(std::string(3 * 224 * 224 * 4, '\0'));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // Bytes that do not fill the declared shape.
    inference::ModelInferRequest req = Base(kBig, "FP32", {2, 3, 224, 224});
    req.add_raw_input_contents(std::string(3 * 224 * 224 * 4, '\0'));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // BYTES shape says two, one element sent.
    inference::ModelInferRequest req = Base(kBig, "BYTES", {2});
    req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // Raw BYTES whose length prefix overruns the buffer.
    inference::ModelInferRequest req = Base(kBig, "BYTES", {1});
    req.add_raw_input_contents(
        std::string("\xff\xff\x00\x00"
                    "abc",
                    7));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    inference::ModelInferRequest req = Base(kBig, "INT8", {1, 3, 224, 224});
    req.add_raw_input_contents(std::string(3 * 224 * 224, '\0'));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    inference::ModelInferRequest req = Base("nope", "BYTES", {1});
    req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
    EXPECT_EQ(Infer(req, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // Still serving.
  inference::ModelInferRequest req = Base(kBig, "BYTES", {1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents(Image("coffee.jpg"));
  req.add_outputs()->set_name("logits");
  r.Clear();
  ASSERT_TRUE(Infer(req, &r).ok());
  ExpectLogitsMatch(Output(r, "logits"), ExpectedBatch(kBig, {"coffee.jpg"}));
}

// ---------------------------------------------------------------- Health

using HealthTest = ServerTest;

TEST_F(HealthTest, FollowsSetServing) {
  for (const char* service :
       {"", "ghostserve.v1.Classifier", "inference.GRPCInferenceService", kBig, kTiny}) {
    const auto h = client::CheckHealth(channel_, service, 5000);
    ASSERT_TRUE(h.rpc_status.ok()) << service << ": " << h.rpc_status.error_message();
    EXPECT_EQ(h.serving, client::ServingStatus::kServing) << service;
  }
  // A service the server does not have.
  EXPECT_EQ(client::CheckHealth(channel_, "no.such.Service", 5000).rpc_status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  // A model the server does not serve.
  EXPECT_EQ(client::CheckHealth(channel_, "ghostnet_999", 5000).rpc_status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  server_->SetServing(false);
  for (const char* service : {"", "ghostserve.v1.Classifier", kTiny}) {
    const auto h = client::CheckHealth(channel_, service, 5000);
    ASSERT_TRUE(h.rpc_status.ok()) << h.rpc_status.error_message();
    EXPECT_EQ(h.serving, client::ServingStatus::kNotServing) << service;
  }
  server_->SetServing(true);
  EXPECT_EQ(client::CheckHealth(channel_, "", 5000).serving, client::ServingStatus::kServing);
}

TEST_F(ServerTest, TraceparentIsReturnedWithoutAnAccessLog) {
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  for (const std::string& sent : {tp, std::string("00-not-a-trace-01")}) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, kCallTimeoutMs);
    ctx.AddMetadata("traceparent", sent);
    ClassifyResponse r;
    ASSERT_TRUE(classifier_->Classify(&ctx, Request(kTiny, "coffee.jpg", 1), &r).ok());
    const auto& md = ctx.GetServerInitialMetadata();
    auto it = md.find("traceparent");
    if (sent == tp) {
      ASSERT_NE(it, md.end());
      EXPECT_EQ(std::string(it->second.data(), it->second.size()), tp);
    } else {
      EXPECT_EQ(it, md.end()) << "an invalid traceparent is not echoed";
    }
  }
}

// ---------------------------------------------------------------- Reflection

// One request/response exchange on grpc.reflection.<version>'s bidi stream
// (v1alpha: gRPC's; v1: ours), with hand-encoded messages, the same for both
// versions (Debian ships no client-side reflection stubs). Returns the
// serialised ServerReflectionResponse, or "" on failure.
std::string ReflectionExchange(const std::shared_ptr<grpc::Channel>& channel, int request_field,
                               const std::string& value, const std::string& version) {
  std::string request;
  request.push_back(static_cast<char>((request_field << 3) | 2));
  request.push_back(static_cast<char>(value.size()));  // short values only
  request += value;

  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  SetTimeout(ctx, 10'000);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection." + version + ".ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t want) {
    return cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) == want && ok;
  };
  std::string response;
  call->StartCall(reinterpret_cast<void*>(1));
  if (step(1)) {
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    if (step(2)) {
      grpc::ByteBuffer reply;
      call->Read(&reply, reinterpret_cast<void*>(3));
      if (step(3)) {
        std::vector<grpc::Slice> slices;
        if (reply.Dump(&slices).ok()) {
          for (const auto& s : slices)
            response.append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
    }
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) != 5) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status.ok() ? response : "";
}

using ReflectionTest = ServerTest;

TEST_F(ReflectionTest, ListsServicesAndServesTheirDescriptors) {
  for (const std::string version : {"v1alpha", "v1"}) {
    SCOPED_TRACE(version);
    // ServerReflectionRequest.list_services = 7.
    const std::string listed = ReflectionExchange(channel_, 7, "*", version);
    ASSERT_FALSE(listed.empty());
    google::protobuf::UnknownFieldSet response;
    ASSERT_TRUE(response.ParseFromString(listed));
    std::vector<std::string> services;
    for (int i = 0; i < response.field_count(); ++i) {
      if (response.field(i).number() != 6) continue;  // list_services_response
      google::protobuf::UnknownFieldSet list;
      ASSERT_TRUE(list.ParseFromString(response.field(i).length_delimited()));
      for (int j = 0; j < list.field_count(); ++j) {
        google::protobuf::UnknownFieldSet service;
        ASSERT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
        ASSERT_GE(service.field_count(), 1);
        services.push_back(service.field(0).length_delimited());
      }
    }
    EXPECT_NE(std::find(services.begin(), services.end(), "ghostserve.v1.Classifier"),
              services.end());
    EXPECT_NE(std::find(services.begin(), services.end(), "inference.GRPCInferenceService"),
              services.end());

    // file_containing_symbol = 4 -> file_descriptor_response = 4.
    const std::string file = ReflectionExchange(channel_, 4, "ghostserve.v1.Classifier", version);
    ASSERT_FALSE(file.empty());
    ASSERT_TRUE(response.ParseFromString(file));
    bool found = false;
    for (int i = 0; i < response.field_count(); ++i) {
      if (response.field(i).number() != 4) continue;
      google::protobuf::UnknownFieldSet files;
      ASSERT_TRUE(files.ParseFromString(response.field(i).length_delimited()));
      for (int j = 0; j < files.field_count(); ++j) {
        google::protobuf::FileDescriptorProto fd;
        ASSERT_TRUE(fd.ParseFromString(files.field(j).length_delimited()));
        if (fd.package() != "ghostserve.v1") continue;
        for (const auto& svc : fd.service()) {
          if (svc.name() != "Classifier") continue;
          std::vector<std::string> methods;
          for (const auto& m : svc.method()) methods.push_back(m.name());
          EXPECT_EQ(methods,
                    (std::vector<std::string>{"Classify", "ClassifyStream", "ListModels"}));
          found = true;
        }
      }
    }
    EXPECT_TRUE(found) << "no descriptor of ghostserve.v1.Classifier";
    if (version == "v1") {
      // Ours also lists itself and knows the health service.
      EXPECT_NE(std::find(services.begin(), services.end(), "grpc.reflection.v1.ServerReflection"),
                services.end());
      const std::string health = ReflectionExchange(channel_, 4, "grpc.health.v1.Health", version);
      ASSERT_TRUE(response.ParseFromString(health));
      ASSERT_EQ(response.field(response.field_count() - 1).number(), 4);  // a descriptor
      // An unknown symbol: error_response = 7 with NOT_FOUND (5).
      const std::string unknown = ReflectionExchange(channel_, 4, "no.such.Symbol", version);
      ASSERT_TRUE(response.ParseFromString(unknown));
      bool not_found = false;
      for (int i = 0; i < response.field_count(); ++i) {
        if (response.field(i).number() != 7) continue;
        google::protobuf::UnknownFieldSet error;
        ASSERT_TRUE(error.ParseFromString(response.field(i).length_delimited()));
        not_found = error.field(0).number() == 1 && error.field(0).varint() == 5;
      }
      EXPECT_TRUE(not_found);
    }
  }
}

// ---------------------------------------------------------------- Metrics

using MetricsTest = ServerTest;

TEST_F(MetricsTest, CountsRequestsByModelAndCode) {
  constexpr int kOk = 3;
  for (int i = 0; i < kOk; ++i) ExpectServes(kBig, Photos()[static_cast<size_t>(i)]);
  ExpectServes(kTiny, "coffee.jpg");
  ClassifyResponse r;
  EXPECT_EQ(Classify(Request("resnet_50", "coffee.jpg", 5), &r).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ClassifyRequest bad = Request(kBig, "coffee.jpg", 5);
  bad.set_image("not an image at all");
  EXPECT_EQ(Classify(bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  std::map<std::string, double> m = ScrapeMetrics();
  EXPECT_EQ(m["ghostserve_requests_total{code=\"OK\",model=\"ghostnet_050\",protocol=\"grpc\"}"],
            kOk);
  EXPECT_EQ(m["ghostserve_requests_total{code=\"OK\",model=\"tiny_10\",protocol=\"grpc\"}"], 1);
  EXPECT_EQ(m["ghostserve_requests_total{code=\"NOT_FOUND\",model=\"unknown\",protocol=\"grpc\"}"],
            1);
  EXPECT_EQ(m["ghostserve_requests_total{code=\"INVALID_ARGUMENT\",model=\"ghostnet_050\",protocol="
              "\"grpc\"}"],
            1);
  // The client's model name never becomes a label.
  for (const auto& [series, value] : m) EXPECT_EQ(series.find("resnet_50"), std::string::npos);
  // Every image that reached the model ran in some batch; the bad one did not.
  const double batches = m["ghostserve_batch_size_count{model=\"ghostnet_050\"}"];
  EXPECT_GE(batches, 1);
  EXPECT_EQ(m["ghostserve_batch_size_sum{model=\"ghostnet_050\"}"], kOk);
  EXPECT_EQ(m["ghostserve_inference_duration_seconds_count{model=\"ghostnet_050\"}"], batches);
  EXPECT_EQ(m["ghostserve_inference_duration_seconds_bucket{model=\"ghostnet_050\",le=\"+Inf\"}"],
            batches);
  EXPECT_GT(m["ghostserve_inference_duration_seconds_sum{model=\"ghostnet_050\"}"], 0);
  EXPECT_EQ(
      m["ghostserve_request_duration_seconds_count{model=\"ghostnet_050\",protocol=\"grpc\"}"],
      kOk + 1);
  ASSERT_EQ(m.count("ghostserve_queue_depth{model=\"ghostnet_050\"}"), 1u);
  EXPECT_EQ(m["ghostserve_queue_depth{model=\"ghostnet_050\"}"], 0);
  EXPECT_EQ(m["ghostserve_inflight_requests"], 0);
  EXPECT_GT(m["ghostserve_model_weight_bytes{model=\"ghostnet_050\"}"],
            m["ghostserve_model_weight_bytes{model=\"tiny_10\"}"]);
  EXPECT_GT(m["process_resident_memory_bytes"], 0);
  EXPECT_GT(m["process_threads"], 1);

  // Counters move with further traffic.
  ExpectServes(kBig, "coffee.jpg");
  m = ScrapeMetrics();
  EXPECT_EQ(m["ghostserve_requests_total{code=\"OK\",model=\"ghostnet_050\",protocol=\"grpc\"}"],
            kOk + 1);
}

TEST_F(MetricsTest, OtherPathsAreNotFound) {
  EXPECT_EQ(HttpGet(server_->metrics_port(), "/nope").rfind("HTTP/1.1 404", 0), 0u);
}

// ---------------------------------------------------------------- Drain

using DrainTest = SlowDecodeTest;

TEST_F(DrainTest, ShutdownFinishesAcceptedRequestsAndRefusesNewOnes) {
  // Two slow images with a quick one queued between them: when the drain
  // begins, one image is being decoded and two wait for the decoder.
  const std::vector<std::string> images = {kSlowImage, "coffee.jpg", kSlowImage};
  const int kSlow = static_cast<int>(images.size());
  std::vector<std::unique_ptr<AsyncClassify>> calls;
  for (int i = 0; i < kSlow; ++i) {
    auto c = std::make_unique<AsyncClassify>();
    c->image_name = images[static_cast<size_t>(i)];
    c->request = Request(kBig, c->image_name, 3, "slow" + std::to_string(i));
    Expected(kBig, c->image_name);
    calls.push_back(std::move(c));
  }
  // The first slow image is accepted before the others are sent, so the
  // others queue behind it whatever order they arrive in.
  AsyncCalls async(classifier_.get());
  async.Start(calls[0].get());
  for (int i = 0; i < 5000 && core_->inflight() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(core_->inflight(), 1);
  for (int i = 1; i < kSlow; ++i) async.Start(calls[static_cast<size_t>(i)].get());
  for (int i = 0; i < 5000 && core_->inflight() < kSlow; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(core_->inflight(), kSlow);

  std::atomic<bool> drained{false};
  std::thread stopper([&] { drained = server_->Shutdown(10'000); });
  for (int i = 0; i < 500 && core_->accepting(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_FALSE(core_->accepting());
  // While draining: health says NOT_SERVING, KServe says not ready, and new
  // work is refused.
  const auto health = client::CheckHealth(channel_, "", 5000);
  EXPECT_TRUE(health.rpc_status.ok()) << health.rpc_status.error_message();
  EXPECT_EQ(health.serving, client::ServingStatus::kNotServing);
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    EXPECT_TRUE(kserve_->ServerReady(&ctx, {}, &r).ok());
    EXPECT_FALSE(r.ready());
  }
  ClassifyResponse r;
  const grpc::Status refused = Classify(Request(kBig, "coffee.jpg", 3), &r);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_GT(core_->inflight(), 0) << "the slow requests finished before the checks";

  stopper.join();
  ASSERT_TRUE(async.Wait());
  EXPECT_TRUE(drained.load());
  for (const auto& c : calls) {
    ASSERT_TRUE(c->status.ok()) << c->request.request_id() << ": " << c->status.error_message();
    EXPECT_EQ(c->response.request_id(), c->request.request_id());
    ExpectPredictionsMatch(c->response, Expected(kBig, c->image_name), config::ImageNetLabels(), 3,
                           c->image_name);
  }
  // After shutdown nothing is served.
  const grpc::Status after = Classify(Request(kBig, "coffee.jpg", 3), &r, 2000);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAVAILABLE) << after.error_message();
}

}  // namespace
}  // namespace ghostserve
