#include "server/service/status_map.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/status/status.h"
#include "proto/status_code_name.h"

namespace ghostserve::service {
namespace {

// Maps `status` and checks the gRPC code and that the message is kept.
void ExpectMapsTo(const absl::Status& status, grpc::StatusCode want) {
  const grpc::Status got = ToGrpcStatus(status);
  EXPECT_EQ(got.error_code(), want) << status << " became " << StatusCodeName(got.error_code());
  EXPECT_EQ(got.error_message(), std::string(status.message())) << status;
}

TEST(StatusMapTest, OkStaysOk) {
  const grpc::Status got = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(got.ok());
  EXPECT_EQ(got.error_code(), grpc::StatusCode::OK);
}

TEST(StatusMapTest, BadImageOrArgumentIsInvalidArgument) {
  ExpectMapsTo(absl::InvalidArgumentError("image is neither JPEG nor PNG"),
               grpc::StatusCode::INVALID_ARGUMENT);
  ExpectMapsTo(absl::OutOfRangeError("top_k must be in [1, 1000], got 5000"),
               grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(StatusMapTest, UnknownModelIsNotFound) {
  ExpectMapsTo(absl::NotFoundError("no model named 'resnet50'"), grpc::StatusCode::NOT_FOUND);
}

TEST(StatusMapTest, QueueFullOrDrainingIsUnavailable) {
  ExpectMapsTo(absl::UnavailableError("model ghostnet_100 queue is full (256 waiting)"),
               grpc::StatusCode::UNAVAILABLE);
  ExpectMapsTo(absl::UnavailableError("model ghostnet_100 is draining; retry on another replica"),
               grpc::StatusCode::UNAVAILABLE);
}

TEST(StatusMapTest, TooLargeIsResourceExhausted) {
  ExpectMapsTo(absl::ResourceExhaustedError("request of 20000000 bytes; the limit is 16777216"),
               grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(StatusMapTest, DeadlinePassedInQueueIsDeadlineExceeded) {
  ExpectMapsTo(absl::DeadlineExceededError("deadline passed after 5000us in the queue"),
               grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST(StatusMapTest, CancelledIsCancelled) {
  ExpectMapsTo(absl::CancelledError("request cancelled while queued"), grpc::StatusCode::CANCELLED);
}

TEST(StatusMapTest, UnauthenticatedIsUnauthenticated) {
  ExpectMapsTo(absl::UnauthenticatedError("missing token"), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(StatusMapTest, OwnBugsAndUnknownErrorsAreInternal) {
  ExpectMapsTo(absl::InternalError("batch result has 3 rows for 4 tasks"),
               grpc::StatusCode::INTERNAL);
  ExpectMapsTo(absl::UnknownError("LibTorch: unexpected exception"), grpc::StatusCode::INTERNAL);
  ExpectMapsTo(absl::DataLossError("weights file checksum mismatch"), grpc::StatusCode::INTERNAL);
  ExpectMapsTo(absl::UnimplementedError("not wired up"), grpc::StatusCode::INTERNAL);
  ExpectMapsTo(absl::AbortedError("aborted"), grpc::StatusCode::INTERNAL);
  ExpectMapsTo(absl::AlreadyExistsError("exists"), grpc::StatusCode::INTERNAL);
}

TEST(StatusMapTest, KeepsEmptyAndNonAsciiMessages) {
  ExpectMapsTo(absl::InvalidArgumentError(""), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectMapsTo(absl::NotFoundError("modèle «ghostnet_999» inconnu"), grpc::StatusCode::NOT_FOUND);
}

TEST(StatusMapTest, StatusCodeNameNamesEveryCode) {
  const std::pair<grpc::StatusCode, const char*> cases[] = {
      {grpc::StatusCode::OK, "OK"},
      {grpc::StatusCode::CANCELLED, "CANCELLED"},
      {grpc::StatusCode::UNKNOWN, "UNKNOWN"},
      {grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
      {grpc::StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
      {grpc::StatusCode::NOT_FOUND, "NOT_FOUND"},
      {grpc::StatusCode::ALREADY_EXISTS, "ALREADY_EXISTS"},
      {grpc::StatusCode::PERMISSION_DENIED, "PERMISSION_DENIED"},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
      {grpc::StatusCode::FAILED_PRECONDITION, "FAILED_PRECONDITION"},
      {grpc::StatusCode::ABORTED, "ABORTED"},
      {grpc::StatusCode::OUT_OF_RANGE, "OUT_OF_RANGE"},
      {grpc::StatusCode::UNIMPLEMENTED, "UNIMPLEMENTED"},
      {grpc::StatusCode::INTERNAL, "INTERNAL"},
      {grpc::StatusCode::UNAVAILABLE, "UNAVAILABLE"},
      {grpc::StatusCode::DATA_LOSS, "DATA_LOSS"},
      {grpc::StatusCode::UNAUTHENTICATED, "UNAUTHENTICATED"},
  };
  for (const auto& [code, name] : cases) {
    EXPECT_EQ(StatusCodeName(code), name) << static_cast<int>(code);
  }
}

TEST(StatusMapTest, StatusCodeNameOfOutOfRangeValueIsUnknown) {
  // Metric labels must come from a bounded set, whatever the code.
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(99)), "UNKNOWN");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(-1)), "UNKNOWN");
}

}  // namespace
}  // namespace ghostserve::service
