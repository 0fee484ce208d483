#include "model/state_dict.h"

#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "model/pickle_reader.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace ghostserve::model {
namespace {

torch::ScalarType ToScalarType(DType d) {
  switch (d) {
    case DType::kF32:
      return torch::kFloat;
    case DType::kF64:
      return torch::kDouble;
    case DType::kF16:
      return torch::kHalf;
    case DType::kBF16:
      return torch::kBFloat16;
    case DType::kI64:
      return torch::kLong;
    case DType::kI32:
      return torch::kInt;
    case DType::kI16:
      return torch::kShort;
    case DType::kI8:
      return torch::kChar;
    case DType::kU8:
      return torch::kByte;
    case DType::kBool:
      return torch::kBool;
  }
  return torch::kFloat;
}

std::optional<DType> FromScalarType(torch::ScalarType t) {
  for (DType d : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    if (ToScalarType(d) == t) return d;
  }
  return std::nullopt;
}

// A contiguous tensor that owns a copy of the view's elements.
torch::Tensor Materialize(const PickledTensor& p) {
  const auto options = torch::TensorOptions().dtype(ToScalarType(p.dtype));
  if (p.storage.size == 0) return torch::empty(p.shape, options);  // touches no element
  const int64_t numel = static_cast<int64_t>(p.storage.size / DTypeSize(p.dtype));
  torch::Tensor flat =
      torch::from_blob(const_cast<uint8_t*>(p.storage.data.get()), {numel}, options);
  return flat.as_strided(p.shape, p.strides, p.offset).contiguous().clone();
}

absl::StatusOr<std::string> ReadHead(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open weights file ", path));
  std::string head(n, '\0');
  in.read(head.data(), static_cast<std::streamsize>(n));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

}  // namespace

absl::StatusOr<StateDict> ReadTorchCheckpoint(const std::string& path) {
  auto head = ReadHead(path, 2);
  if (!head.ok()) return head.status();
  if (*head != "PK") {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     " is not a torch.save zip archive (files written by torch < 1.6 "
                     "in the legacy format must be re-saved with a newer torch)"));
  }
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (!reader.hasRecord("data.pkl")) {
      return absl::InvalidArgumentError(absl::StrCat(path, " has no data.pkl record"));
    }
    at::DataPtr pkl;
    size_t size = 0;
    std::tie(pkl, size) = reader.getRecord("data.pkl");
    RecordLoader load = [&reader](const std::string& name) -> std::optional<RecordBytes> {
      if (!reader.hasRecord(name)) return std::nullopt;
      auto record = std::make_shared<at::DataPtr>();
      size_t bytes = 0;
      std::tie(*record, bytes) = reader.getRecord(name);
      const auto* data = static_cast<const uint8_t*>(record->get());
      return RecordBytes{std::shared_ptr<const uint8_t>(record, data), bytes};
    };
    auto pickled =
        ReadPickledStateDict(std::string_view(static_cast<const char*>(pkl.get()), size), load);
    if (!pickled.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", pickled.status().message()));
    }
    std::vector<torch::Tensor> tensors;
    tensors.reserve(pickled->tensors.size());
    for (const PickledTensor& p : pickled->tensors) tensors.push_back(Materialize(p));
    StateDict out;
    for (auto& [name, index] : pickled->entries) out.emplace_back(name, tensors[index]);
    return out;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unreadable torch archive: ", e.what()));
  }
}

namespace {

// Reads the tensors `in` (holding file_size bytes) describes; `path` names
// the source in errors.
absl::StatusOr<StateDict> ParseSafetensors(std::istream& in, uint64_t file_size,
                                           const std::string& path) {
  auto index = ParseSafetensorsHeader(in, file_size, path);
  if (!index.ok()) return index.status();
  StateDict out;
  for (const SafetensorsEntry& e : index->entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(ToScalarType(e.dtype)));
    in.seekg(static_cast<std::streamoff>(index->data_start + e.begin));
    if (!in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin))) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": truncated at '", e.name, "'"));
    }
    out.emplace_back(e.name, t);
  }
  return out;
}

}  // namespace

absl::StatusOr<StateDict> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open weights file ", path));
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  return ParseSafetensors(in, file_size, path);
}

absl::StatusOr<StateDict> ParseSafetensorsBytes(std::string_view bytes, const std::string& name) {
  MemoryStreamBuf buf(bytes);
  std::istream in(&buf);
  return ParseSafetensors(in, bytes.size(), name);
}

absl::Status WriteSafetensors(const std::string& path, const StateDict& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    std::optional<DType> d = FromScalarType(t.scalar_type());
    const std::string dtype(d ? SafetensorsDTypeCode(*d) : std::string_view());
    if (dtype.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot store dtype of ", name));
    }
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = c.numel() * c.element_size();
    header[name] = {
        {"dtype", dtype}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(c);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // align the data
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& c : contiguous) {
    out.write(static_cast<const char*>(c.data_ptr()),
              static_cast<std::streamsize>(c.numel() * c.element_size()));
  }
  if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<StateDict> ReadWeightsFile(const std::string& path) {
  auto head = ReadHead(path, 9);
  if (!head.ok()) return head.status();
  if (head->size() >= 2 && head->substr(0, 2) == "PK") return ReadTorchCheckpoint(path);
  if (head->size() == 9 && (*head)[8] == '{') return ReadSafetensors(path);
  return absl::InvalidArgumentError(
      absl::StrCat(path, " is neither a torch.save zip archive nor a safetensors file"));
}

StateDict ModuleStateDict(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    out.emplace_back(p.key(), p.value());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    out.emplace_back(b.key(), b.value());
  }
  return out;
}

absl::Status LoadStateDict(torch::nn::Module& module, const StateDict& state) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, t] : state) by_name[name] = &t;
  StateDict targets = ModuleStateDict(module);
  std::set<std::string> expected;
  for (const auto& [name, target] : targets) {
    expected.insert(name);
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor '", name, "'"));
    }
    const torch::Tensor& src = *it->second;
    if (src.sizes() != target.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ",
                                                     c10::str(src.sizes()), ", the model expects ",
                                                     c10::str(target.sizes())));
    }
    const bool both_float = src.is_floating_point() && target.is_floating_point();
    if (!both_float && src.scalar_type() != target.scalar_type() &&
        !(src.is_floating_point() == target.is_floating_point())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has dtype ", c10::toString(src.scalar_type()),
                       ", the model expects ", c10::toString(target.scalar_type())));
    }
  }
  for (const auto& [name, t] : state) {
    if (expected.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected tensor '", name, "'"));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    target.copy_(*by_name[name]);
  }
  return absl::OkStatus();
}

}  // namespace ghostserve::model
