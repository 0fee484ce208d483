// libFuzzer target for the safetensors reader (model/safetensors.h): the
// input is a whole file. Reads every described tensor as model/state_dict.cc
// does; the tensors together must never need more bytes than the file holds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <istream>
#include <string_view>
#include <vector>

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ghostserve::model::MemoryStreamBuf buf(bytes);
  std::istream in(&buf);
  auto index = ghostserve::model::ParseSafetensorsHeader(in, size, "fuzz");
  if (!index.ok()) return 0;
  uint64_t total = 0;
  for (const auto& e : index->entries) {
    total += e.end - e.begin;
    if (total > size) std::abort();  // the bound the reader promises
    std::vector<char> t(e.end - e.begin);
    in.clear();
    in.seekg(static_cast<std::streamoff>(index->data_start + e.begin));
    if (!in.read(t.data(), static_cast<std::streamsize>(t.size()))) std::abort();
  }
  return 0;
}
