// The pickle fuzzer's input format, shared by tests/fuzz/pickle_fuzzer.cc,
// tests/unit/reader_corpus_test.cc and written by make_reader_corpus.py: a
// torch.save archive's data.pkl and its storage records, without the zip
// (LibTorch's zip reader is not ours to fuzz):
//
//   u32 pkl_len, pkl bytes, then records: u32 name_len, name, u32 size, bytes
//
// (little-endian). Parsing stops at the first record that does not fit.
#ifndef GHOSTSERVE_TESTS_FUZZ_READER_INPUT_H_
#define GHOSTSERVE_TESTS_FUZZ_READER_INPUT_H_

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "model/pickle_reader.h"

namespace ghostserve::fuzz {

struct PickleInput {
  std::string_view pkl;
  std::map<std::string, std::string_view> records;
};

inline PickleInput SplitPickleInput(std::string_view in) {
  PickleInput out;
  auto take_u32 = [&in](uint32_t& v) {
    if (in.size() < 4) return false;
    std::memcpy(&v, in.data(), 4);
    in.remove_prefix(4);
    return true;
  };
  uint32_t n = 0;
  if (!take_u32(n) || n > in.size()) {
    out.pkl = in;
    return out;
  }
  out.pkl = in.substr(0, n);
  in.remove_prefix(n);
  while (true) {
    uint32_t name_len = 0, size = 0;
    if (!take_u32(name_len) || name_len > in.size()) break;
    std::string name(in.substr(0, name_len));
    in.remove_prefix(name_len);
    if (!take_u32(size) || size > in.size()) break;
    out.records.emplace(std::move(name), in.substr(0, size));
    in.remove_prefix(size);
  }
  return out;
}

// A RecordLoader over the input's records; each load copies the bytes into
// a buffer of exactly their size (so ASan sees reads past the end).
inline model::RecordLoader LoaderFor(const PickleInput& input) {
  return [&input](const std::string& name) -> std::optional<model::RecordBytes> {
    auto it = input.records.find(name);
    if (it == input.records.end()) return std::nullopt;
    std::shared_ptr<uint8_t> copy(new uint8_t[it->second.size() + 1],
                                  std::default_delete<uint8_t[]>());
    std::memcpy(copy.get(), it->second.data(), it->second.size());
    return model::RecordBytes{copy, it->second.size()};
  };
}

// Reads every element a described view touches (what materializing it
// does) and returns a checksum, so out-of-range views are reported by ASan.
inline uint64_t TouchView(const model::PickledTensor& t) {
  if (t.storage.size == 0) return 0;
  const size_t elem = model::DTypeSize(t.dtype);
  const size_t rank = t.shape.size();
  std::vector<int64_t> idx(rank, 0);
  uint64_t sum = 0;
  while (true) {
    int64_t at = t.offset;
    for (size_t k = 0; k < rank; ++k) at += idx[k] * t.strides[k];
    for (size_t b = 0; b < elem; ++b)
      sum += t.storage.data.get()[static_cast<size_t>(at) * elem + b];
    size_t k = rank;
    while (k > 0) {
      --k;
      if (++idx[k] < t.shape[k]) break;
      idx[k] = 0;
      if (k == 0) return sum;
    }
    if (rank == 0) return sum;
  }
}

}  // namespace ghostserve::fuzz

#endif  // GHOSTSERVE_TESTS_FUZZ_READER_INPUT_H_
