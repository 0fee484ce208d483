// multipart/form-data (RFC 7578), just enough for an image upload form.
#ifndef GHOSTSERVE_SERVER_HTTP_MULTIPART_H_
#define GHOSTSERVE_SERVER_HTTP_MULTIPART_H_

#include <string_view>

#include "absl/status/statusor.h"

namespace ghostserve::http {

// The contents of the first part of `body` that carries a file (a filename
// in its Content-Disposition), or of its first part if none does. Borrowed
// from `body`. InvalidArgument if `content_type` has no boundary or the body
// does not follow it.
absl::StatusOr<std::string_view> FirstFormFile(std::string_view content_type,
                                               std::string_view body);

}  // namespace ghostserve::http

#endif  // GHOSTSERVE_SERVER_HTTP_MULTIPART_H_
