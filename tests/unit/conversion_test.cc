// The pure request and response conversions of the gRPC front-ends
// (server/service/*_conversion.h), without a server.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "server/service/classify_conversion.h"
#include "server/service/kserve_conversion.h"

namespace ghostserve::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ClassifyConversionTest, MapsTopKPriorityAndBorrowsTheImage) {
  v1::ClassifyRequest req;
  req.set_model("m");
  req.set_image("jpeg bytes");
  auto r = FromClassify(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->top_k, core::InferRequest::kTopKDefault);
  EXPECT_EQ(r->priority, 0);
  EXPECT_EQ(r->version, "");
  ASSERT_EQ(r->encoded.size(), 1u);
  EXPECT_EQ(r->encoded[0].data(), req.image().data()) << "the image must be borrowed, not copied";

  req.set_top_k(3);
  req.set_priority(v1::PRIORITY_HIGH);
  req.set_model_version("4");
  r = FromClassify(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->top_k, 3);
  EXPECT_EQ(r->priority, 1);
  EXPECT_EQ(r->version, "4");
}

TEST(ClassifyConversionTest, OverlongRequestIdIsInvalidArgument) {
  v1::ClassifyRequest req;
  req.set_request_id(std::string(129, 'x'));
  EXPECT_EQ(FromClassify(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.set_request_id(std::string(128, 'x'));
  EXPECT_TRUE(FromClassify(req).ok());
}

TEST(ClassifyConversionTest, ResponseCarriesTimingAndTheFirstImagesPredictions) {
  v1::ClassifyRequest req;
  req.set_request_id("id-7");
  core::InferResult result;
  result.model = "m";
  result.version = 4;
  result.num_classes = 2;
  result.logits = {0.f, 1.f};
  result.predictions = {{{1, "b", 0.75f}, {0, "a", 0.25f}}};
  result.batch_size = 3;
  result.timing = {1, 2, 3, 4, 10};
  const v1::ClassifyResponse r = ToClassify(req, result);
  EXPECT_EQ(r.model(), "m");
  EXPECT_EQ(r.model_version(), 4);
  EXPECT_EQ(r.request_id(), "id-7");
  EXPECT_EQ(r.batch_size(), 3u);
  EXPECT_EQ(r.timing().preprocess_wait_us(), 1u);
  EXPECT_EQ(r.timing().preprocess_us(), 2u);
  EXPECT_EQ(r.timing().queue_us(), 3u);
  EXPECT_EQ(r.timing().inference_us(), 4u);
  EXPECT_EQ(r.timing().total_us(), 10u);
  ASSERT_EQ(r.predictions_size(), 2);
  EXPECT_EQ(r.predictions(0).class_index(), 1u);
  EXPECT_EQ(r.predictions(0).label(), "b");
  EXPECT_FLOAT_EQ(r.predictions(0).score(), 0.75f);
}

inference::ModelInferRequest KServe(const std::string& datatype, std::vector<int64_t> shape) {
  inference::ModelInferRequest req;
  req.set_model_name("m");
  auto* in = req.add_inputs();
  in->set_name(datatype == "BYTES" ? "images" : "input");  // as ModelMetadata names them
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  return req;
}

TEST(KServeConversionTest, Fp32RawContentsAreBorrowedWithTheirShape) {
  inference::ModelInferRequest req = KServe("FP32", {2, 1, 2, 2});
  req.add_raw_input_contents(std::string(2 * 4 * 4, '\0'));
  auto call = FromKServe(req);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->request.tensor.data, req.raw_input_contents(0).data());
  EXPECT_THAT(call->request.tensor.shape, ElementsAre(2, 1, 2, 2));
  EXPECT_EQ(call->request.images(), 2);
  EXPECT_TRUE(call->outputs.logits);
  EXPECT_TRUE(call->outputs.probabilities);
}

TEST(KServeConversionTest, BytesMayCarryTritonsTrailingDimensionOfOne) {
  // ModelConfig declares "images" with dims [1]; Triton clients then send
  // [N, 1].
  inference::ModelInferRequest req = KServe("BYTES", {2, 1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("a");
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("b");
  auto call = FromKServe(req);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->request.images(), 2);
  req = KServe("BYTES", {1, 2});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("a");
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("b");
  EXPECT_EQ(FromKServe(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KServeConversionTest, ProtocolErrorsAreInvalidArgument) {
  auto expect = [](const inference::ModelInferRequest& req, const std::string& text) {
    const absl::Status s = FromKServe(req).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(text));
  };
  inference::ModelInferRequest req = KServe("FP32", {2, 1, 2, 2});
  req.add_raw_input_contents(std::string(4 * 4, '\0'));
  expect(req, "raw FP32 input holds 16 bytes, shape needs 32");
  // A shape whose element count overflows never reaches a multiplication.
  req = KServe("FP32", {1LL << 40, 1LL << 40, 1, 1});
  req.add_raw_input_contents(std::string(16, '\0'));
  expect(req, "every dimension >= 1");
  req = KServe("BYTES", {2});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("x");
  expect(req, "bytes_contents holds 1 elements, shape says 2");
  req = KServe("BYTES", {1});
  req.add_raw_input_contents(
      std::string("\xff\xff\x00\x00"
                  "abc",
                  7));
  expect(req, "raw BYTES element overruns the input");
  req = KServe("INT8", {1});
  expect(req, "input datatype INT8 is not supported");
  req = KServe("BYTES", {1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("x");
  req.add_outputs()->set_name("features");
  expect(req, "unknown output 'features'");
}

TEST(KServeConversionTest, PriorityParameterFollowsTriton) {
  inference::ModelInferRequest req = KServe("BYTES", {1});
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("x");
  EXPECT_EQ(FromKServe(req)->request.priority, 0);
  (*req.mutable_parameters())["priority"].set_int64_param(1);
  EXPECT_EQ(FromKServe(req)->request.priority, 1);
  (*req.mutable_parameters())["priority"].set_int64_param(2);
  EXPECT_EQ(FromKServe(req)->request.priority, 0);
  (*req.mutable_parameters())["priority"].set_string_param("high");
  EXPECT_EQ(FromKServe(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KServeConversionTest, RequestedOutputsOnlyAndProbabilitiesSumToOne) {
  inference::ModelInferRequest req = KServe("BYTES", {2});
  req.set_id("k-1");
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("x");
  req.mutable_inputs(0)->mutable_contents()->add_bytes_contents("y");
  req.add_outputs()->set_name("probabilities");
  auto call = FromKServe(req);
  ASSERT_TRUE(call.ok());
  EXPECT_FALSE(call->outputs.logits);
  core::InferResult result;
  result.num_classes = 3;
  result.logits = {0.f, 1.f, 2.f, 5.f, 5.f, 5.f};
  inference::ModelInferResponse response;
  ToKServe(req, result, call->outputs, &response);
  EXPECT_EQ(response.id(), "k-1");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "probabilities");
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(2, 3));
  std::vector<float> p(6);
  ASSERT_EQ(response.raw_output_contents(0).size(), p.size() * sizeof(float));
  std::memcpy(p.data(), response.raw_output_contents(0).data(), p.size() * sizeof(float));
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-6);
  EXPECT_GT(p[2], p[1]);
  EXPECT_NEAR(p[3], 1.0 / 3, 1e-6);
}

}  // namespace
}  // namespace ghostserve::service
