#include "model/safetensors.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace ghostserve::model {
namespace {

struct DTypeCode {
  const char* code;
  DType dtype;
};
constexpr DTypeCode kDTypes[] = {
    {"F32", DType::kF32}, {"F64", DType::kF64},   {"F16", DType::kF16}, {"BF16", DType::kBF16},
    {"I64", DType::kI64}, {"I32", DType::kI32},   {"I16", DType::kI16}, {"I8", DType::kI8},
    {"U8", DType::kU8},   {"BOOL", DType::kBool},
};

}  // namespace

std::optional<DType> SafetensorsDType(std::string_view code) {
  for (const DTypeCode& d : kDTypes) {
    if (code == d.code) return d.dtype;
  }
  return std::nullopt;
}

std::string_view SafetensorsDTypeCode(DType dtype) {
  for (const DTypeCode& d : kDTypes) {
    if (d.dtype == dtype) return d.code;
  }
  return {};
}

MemoryStreamBuf::MemoryStreamBuf(std::string_view bytes) {
  char* p = const_cast<char*>(bytes.data());
  setg(p, p, p + bytes.size());
}

MemoryStreamBuf::pos_type MemoryStreamBuf::seekoff(off_type off, std::ios_base::seekdir dir,
                                                   std::ios_base::openmode) {
  char* base = dir == std::ios_base::beg ? eback() : dir == std::ios_base::cur ? gptr() : egptr();
  // Compare offsets, not pointers, so a wild offset is never added to one.
  const off_type from_start = (base - eback()) + off;
  if (from_start < 0 || from_start > egptr() - eback()) return pos_type(off_type(-1));
  setg(eback(), eback() + from_start, egptr());
  return pos_type(from_start);
}

MemoryStreamBuf::pos_type MemoryStreamBuf::seekpos(pos_type pos, std::ios_base::openmode mode) {
  return seekoff(off_type(pos), std::ios_base::beg, mode);
}

absl::StatusOr<SafetensorsIndex> ParseSafetensorsHeader(std::istream& in, uint64_t file_size,
                                                        const std::string& path) {
  uint64_t header_len = 0;
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(&header_len), 8)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": too short for safetensors"));
  }
  if (header_len > 100'000'000 || header_len > file_size - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": safetensors header length ", header_len, " is invalid"));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": safetensors header is not a JSON object"));
  }
  SafetensorsIndex index;
  index.data_start = 8 + header_len;
  const uint64_t data_size = file_size - index.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& e = it.value();
    auto bad = [&](const char* why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", it.key(), "': ", why));
    };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets")) {
      return bad("needs dtype, shape and data_offsets");
    }
    if (!e["dtype"].is_string()) return bad("dtype is not a string");
    auto dt = SafetensorsDType(e["dtype"].get<std::string>());
    if (!dt) return bad("unsupported dtype");
    SafetensorsEntry entry{it.key(), *dt, {}, 0, 0};
    if (!e["shape"].is_array() || e["shape"].size() > 8) return bad("bad shape");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) {
        return bad("bad shape");
      }
      entry.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
      if (numel > (uint64_t{1} << 40)) return bad("shape too large");
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return bad("bad data_offsets");
    }
    entry.begin = off[0].get<uint64_t>();
    entry.end = off[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > data_size) {
      return bad("data_offsets outside the file");
    }
    if (entry.end - entry.begin != numel * DTypeSize(entry.dtype)) {
      return bad("byte length does not match dtype and shape");
    }
    index.entries.push_back(std::move(entry));
  }
  // nlohmann::json orders keys alphabetically; keep the file's data order.
  std::sort(index.entries.begin(), index.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  // Overlapping ranges would let a small file describe many copies of its
  // data; the format forbids them. (Empty tensors take no bytes.)
  uint64_t covered = 0;
  for (const SafetensorsEntry& e : index.entries) {
    if (e.begin == e.end) continue;
    if (e.begin < covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", e.name, "': data_offsets overlap another tensor"));
    }
    covered = e.end;
  }
  return index;
}

}  // namespace ghostserve::model
