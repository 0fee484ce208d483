// The HTTP front-end's pure parts: KServe v2 REST bodies <-> the gRPC
// messages (JSON and the binary tensor data extension), multipart form
// uploads, and the status mapping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "nlohmann/json.hpp"
#include "server/http/multipart.h"
#include "server/service/kserve_conversion.h"
#include "server/service/kserve_rest.h"
#include "server/service/status_map.h"

namespace ghostserve::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using nlohmann::json;

std::string RawFloats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::string LengthPrefixed(const std::vector<std::string>& elements) {
  std::string out;
  for (const auto& e : elements) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out += e;
  }
  return out;
}

TEST(KServeRestTest, JsonFp32NestedDataFlattensInOrder) {
  const std::string body = R"({"id": "r1", "inputs": [{"name": "input", "datatype": "FP32",
      "shape": [1, 1, 2, 2], "data": [[[[1, 2.5], [3, -4]]]]}],
      "parameters": {"priority": 1}})";
  auto r = ParseRestInfer("m", "", body, std::nullopt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->proto.model_name(), "m");
  EXPECT_EQ(r->proto.id(), "r1");
  ASSERT_EQ(r->proto.inputs_size(), 1);
  EXPECT_THAT(r->proto.inputs(0).shape(), ElementsAre(1, 1, 2, 2));
  EXPECT_THAT(r->proto.inputs(0).contents().fp32_contents(), ElementsAre(1.f, 2.5f, 3.f, -4.f));
  EXPECT_EQ(r->proto.parameters().at("priority").int64_param(), 1);
  // And the gRPC path accepts it as it is.
  auto call = FromKServe(r->proto);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->request.priority, 1);
  EXPECT_EQ(call->request.tensor.shape, (std::vector<int64_t>{1, 1, 2, 2}));
}

TEST(KServeRestTest, JsonBytesAcceptBase64StringsAndB64Objects) {
  const std::string a = "\x89PNG\r\n\x1a\n-not-utf8-\xff", b = "jpeg bytes";
  const json doc{{"inputs",
                  {{{"name", "images"},
                    {"datatype", "BYTES"},
                    {"shape", {2}},
                    {"data", {absl::Base64Escape(a), {{"b64", absl::Base64Escape(b)}}}}}}}};
  auto r = ParseRestInfer("m", "2", doc.dump(), std::nullopt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->proto.model_version(), "2");
  EXPECT_THAT(r->proto.inputs(0).contents().bytes_contents(), ElementsAre(a, b));
}

TEST(KServeRestTest, BinaryExtensionCarriesFp32AndBytesInputs) {
  const std::vector<float> values{0.5f, -1.f, 2.f, 8.f};
  const std::string header = json{{"inputs",
                                   {{{"name", "input"},
                                     {"datatype", "FP32"},
                                     {"shape", {1, 1, 2, 2}},
                                     {"parameters", {{"binary_data_size", 16}}}}}},
                                  {"outputs",
                                   {{{"name", "logits"}, {"parameters", {{"binary_data", true}}}},
                                    {{"name", "probabilities"}}}}}
                                 .dump();
  auto r = ParseRestInfer("m", "", header + RawFloats(values), header.size());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->proto.raw_input_contents_size(), 1);
  EXPECT_EQ(r->proto.raw_input_contents(0), RawFloats(values));
  EXPECT_EQ(r->proto.inputs(0).parameters().count("binary_data_size"), 0u);
  EXPECT_THAT(r->binary_outputs, ElementsAre(true, false));

  const std::string images = LengthPrefixed({"first image", "second"});
  const std::string bytes_header =
      json{{"inputs",
            {{{"name", "images"},
              {"datatype", "BYTES"},
              {"shape", {2}},
              {"parameters", {{"binary_data_size", images.size()}}}}}}}
          .dump();
  auto b = ParseRestInfer("m", "", bytes_header + images, bytes_header.size());
  ASSERT_TRUE(b.ok()) << b.status();
  auto call = FromKServe(b->proto);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_THAT(call->request.encoded, ElementsAre("first image", "second"));
}

TEST(KServeRestTest, MalformedBodiesAreInvalidArgumentsNamingTheProblem) {
  struct Case {
    std::string body;
    std::optional<size_t> header_length;
    std::string message;
  };
  const std::string fp32_binary =
      R"({"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,1,2],)"
      R"("parameters":{"binary_data_size":8}}]})";
  const std::vector<Case> cases = {
      {"{not json", std::nullopt, "not valid JSON"},
      {"[1, 2]", std::nullopt, "must be a JSON object"},
      {R"({"outputs": []})", std::nullopt, "'inputs' array"},
      {R"({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]})", std::nullopt,
       "needs a 'name'"},
      {R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]})", std::nullopt,
       "'data' array or a 'binary_data_size'"},
      {R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]})",
       std::nullopt, "only numbers"},
      {R"({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]})",
       std::nullopt, "not valid base64"},
      {std::string(100, '[') + std::string(100, ']'), std::nullopt, "nested too deeply"},
      {R"({"inputs": [], "parameters": {"x": 1.5}})", std::nullopt, "bool, an integer or a string"},
      // A truncated binary part: 8 bytes declared, 4 sent.
      {fp32_binary + "abcd", fp32_binary.size(), "only 4 remain"},
      // Binary data nobody declared.
      {fp32_binary + "abcdefgh!", fp32_binary.size(), "1 bytes of binary data follow"},
      {"{}", 99, "exceeds the body"},
  };
  for (const auto& c : cases) {
    auto r = ParseRestInfer("m", "", c.body, c.header_length);
    ASSERT_FALSE(r.ok()) << c.body.substr(0, 80);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message)) << c.body.substr(0, 80);
  }
}

TEST(KServeRestTest, ResponsesAreJsonOrJsonFollowedByBinaryOutputs) {
  inference::ModelInferResponse response;
  response.set_model_name("m");
  response.set_model_version("1");
  response.set_id("r1");
  const std::vector<float> logits{0.1f, -2.f, 3.25f}, probs{0.2f, 0.3f, 0.5f};
  for (const auto& [name, values] :
       {std::make_pair("logits", logits), std::make_pair("probabilities", probs)}) {
    auto* o = response.add_outputs();
    o->set_name(name);
    o->set_datatype("FP32");
    o->add_shape(1);
    o->add_shape(3);
    *response.add_raw_output_contents() = RawFloats(values);
  }
  RestInferRequest plain;
  RestBody text = ToRestInfer(plain, response);
  EXPECT_FALSE(text.json_length);
  json doc = json::parse(text.body);
  EXPECT_EQ(doc["model_name"], "m");
  EXPECT_EQ(doc["id"], "r1");
  EXPECT_EQ(doc["outputs"][0]["shape"], json({1, 3}));
  // Floats survive the text round trip exactly.
  EXPECT_EQ(doc["outputs"][0]["data"].get<std::vector<float>>(), logits);

  RestInferRequest binary;
  binary.proto.add_outputs()->set_name("probabilities");
  binary.binary_outputs = {true};
  RestBody mixed = ToRestInfer(binary, response);
  ASSERT_TRUE(mixed.json_length);
  json head = json::parse(mixed.body.substr(0, *mixed.json_length));
  EXPECT_TRUE(head["outputs"][0].contains("data"));
  EXPECT_EQ(head["outputs"][1]["parameters"]["binary_data_size"], 12);
  EXPECT_EQ(mixed.body.substr(*mixed.json_length), RawFloats(probs));
}

TEST(MultipartTest, FindsTheFilePartAmongFields) {
  const std::string body =
      "preamble\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
      "Content-Type: image/png\r\n\r\n\x89PNG\r\n--not-the-boundary\r\n"
      "--XyZ--\r\n";
  auto file = http::FirstFormFile("multipart/form-data; boundary=XyZ", body);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, "\x89PNG\r\n--not-the-boundary");
  auto quoted = http::FirstFormFile("multipart/form-data; boundary=\"XyZ\"", body);
  ASSERT_TRUE(quoted.ok());
  EXPECT_EQ(*quoted, *file);
}

TEST(MultipartTest, MalformedFormsAreRefused) {
  for (const auto& [type, body] : std::vector<std::pair<std::string, std::string>>{
           {"multipart/form-data", "--a\r\n\r\nx\r\n--a--"},          // no boundary
           {"multipart/form-data; boundary=a", "no delimiter at all"},  // body without it
           {"multipart/form-data; boundary=a", "--a\r\nheaders never end"},
           {"multipart/form-data; boundary=a", "--a\r\nX: y\r\n\r\nnever terminated"},
           {"multipart/form-data; boundary=a", "--a--\r\n"},  // no parts
       }) {
    auto r = http::FirstFormFile(type, body);
    EXPECT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(HttpStatusTest, FollowsTheGrpcMapping) {
  EXPECT_EQ(ToHttpStatus(absl::OkStatus()), 200);
  EXPECT_EQ(ToHttpStatus(absl::InvalidArgumentError("")), 400);
  EXPECT_EQ(ToHttpStatus(absl::OutOfRangeError("")), 400);
  EXPECT_EQ(ToHttpStatus(absl::UnauthenticatedError("")), 401);
  EXPECT_EQ(ToHttpStatus(absl::NotFoundError("")), 404);
  EXPECT_EQ(ToHttpStatus(absl::ResourceExhaustedError("")), 429);
  EXPECT_EQ(ToHttpStatus(absl::UnavailableError("")), 503);
  EXPECT_EQ(ToHttpStatus(absl::DeadlineExceededError("")), 504);
  EXPECT_EQ(ToHttpStatus(absl::InternalError("")), 500);
  EXPECT_EQ(ToHttpStatus(absl::DataLossError("")), 500);
}

}  // namespace
}  // namespace ghostserve::service
