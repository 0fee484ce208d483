// grpc.reflection.v1.ServerReflection, which gRPC 1.51's C++ library does not
// serve (it has only v1alpha, whose messages are the same). Answers from the
// process's generated descriptor pool: the services listed at construction,
// the file defining a symbol or named by its file name (with the files it
// imports), extensions of a type. Unknown names
// get an in-band error_response with NOT_FOUND, as the reference server does.
#ifndef GHOSTSERVE_SERVER_SERVICE_REFLECTION_V1_H_
#define GHOSTSERVE_SERVER_SERVICE_REFLECTION_V1_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace ghostserve::service {

class ReflectionV1Service final : public grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  // `services`: the full names list_services answers.
  explicit ReflectionV1Service(std::vector<std::string> services);

  grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                          grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* ctx) override;

  // The answer to one request.
  grpc::reflection::v1::ServerReflectionResponse Answer(
      const grpc::reflection::v1::ServerReflectionRequest& request) const;

 private:
  const std::vector<std::string> services_;
};

}  // namespace ghostserve::service

#endif  // GHOSTSERVE_SERVER_SERVICE_REFLECTION_V1_H_
