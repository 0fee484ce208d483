// libFuzzer target for the restricted pickle reader (model/pickle_reader.h):
// data.pkl plus storage records in the format of tests/fuzz/reader_input.h.
// Any status is fine; crashes, sanitizer reports, leaks, views outside their
// storage and allocations beyond the limit in run.sh are findings.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "model/pickle_reader.h"
#include "tests/fuzz/reader_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto input = ghostserve::fuzz::SplitPickleInput(
      std::string_view(reinterpret_cast<const char*>(data), size));
  auto sd = ghostserve::model::ReadPickledStateDict(input.pkl, ghostserve::fuzz::LoaderFor(input));
  if (!sd.ok()) return 0;
  volatile uint64_t sink = 0;
  for (const auto& t : sd->tensors) sink = sink + ghostserve::fuzz::TouchView(t);
  for (const auto& [name, index] : sd->entries) {
    if (index >= sd->tensors.size()) std::abort();  // an entry names no tensor
  }
  return 0;
}
