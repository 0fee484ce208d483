#include "server/http/multipart.h"

#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ghostserve::http {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The boundary parameter of a multipart Content-Type (RFC 2046: 1-70
// characters, possibly quoted).
std::optional<std::string> Boundary(std::string_view content_type) {
  for (absl::string_view param : absl::StrSplit(Av(content_type), ';')) {
    param = absl::StripAsciiWhitespace(param);
    if (!absl::StartsWithIgnoreCase(param, "boundary=")) continue;
    absl::string_view value = param.substr(9);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (value.empty() || value.size() > 70) return std::nullopt;
    return std::string(value);
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::string_view> FirstFormFile(std::string_view content_type,
                                               std::string_view body_in) {
  const absl::string_view body = Av(body_in);
  const auto boundary = Boundary(content_type);
  if (!boundary) {
    return absl::InvalidArgumentError("multipart/form-data without a valid boundary parameter");
  }
  const std::string delimiter = absl::StrCat("--", *boundary);
  const std::string separator = absl::StrCat("\r\n", delimiter);
  // The first delimiter may follow a preamble; it starts a line.
  size_t pos = absl::StartsWith(body, delimiter) ? 0 : body.find(separator);
  if (pos == absl::string_view::npos) {
    return absl::InvalidArgumentError("multipart body does not contain its boundary");
  }
  pos += pos == 0 ? delimiter.size() : separator.size();
  std::optional<absl::string_view> first;
  while (true) {
    absl::string_view rest = body.substr(pos);
    if (absl::StartsWith(rest, "--")) break;  // closing delimiter
    if (!absl::ConsumePrefix(&rest, "\r\n")) {
      return absl::InvalidArgumentError("malformed multipart delimiter line");
    }
    const size_t headers_end = rest.find("\r\n\r\n");
    if (headers_end == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart part headers are not terminated");
    }
    const absl::string_view headers = rest.substr(0, headers_end);
    const absl::string_view after = rest.substr(headers_end + 4);
    const size_t end = after.find(separator);
    if (end == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart part is not terminated by its boundary");
    }
    const absl::string_view content = after.substr(0, end);
    bool is_file = false;
    for (absl::string_view line : absl::StrSplit(headers, "\r\n")) {
      if (absl::StartsWithIgnoreCase(line, "content-disposition:") &&
          absl::StrContains(absl::AsciiStrToLower(line), "filename=")) {
        is_file = true;
      }
    }
    if (is_file) return std::string_view(content.data(), content.size());
    if (!first) first = content;
    pos = static_cast<size_t>(after.data() - body.data()) + end + separator.size();
  }
  if (!first) return absl::InvalidArgumentError("multipart body has no parts");
  return std::string_view(first->data(), first->size());
}

}  // namespace ghostserve::http
