#include "model/state_dict.h"

#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace ghostserve::model {
namespace {

// ---------------------------------------------------------------------------
// A restricted pickle machine for torch.save state dicts.

struct PyValue;
using PyRef = std::shared_ptr<PyValue>;

struct PyGlobal {
  std::string module, name;
  std::string Qualified() const { return module + "." + name; }
};
struct PyStorage {
  torch::Tensor flat;  // 1-D tensor owning the storage bytes
};
struct PyDict {
  std::vector<std::pair<PyRef, PyRef>> items;
};
// A call of a global we do not interpret (kept so that unrelated entries in a
// checkpoint, e.g. optimiser settings, do not fail the whole load).
struct PyOpaque {
  std::string what;
};

struct PyValue {
  std::variant<std::monostate, bool, int64_t, double, std::string,
               std::vector<PyRef>,  // tuple or list
               PyDict, PyGlobal, PyStorage, torch::Tensor, PyOpaque>
      v;
  bool is_list = false;
};

PyRef Make(decltype(PyValue::v) v) {
  auto r = std::make_shared<PyValue>();
  r->v = std::move(v);
  return r;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, caffe2::serialize::PyTorchStreamReader* reader)
      : p_(data), end_(data + size), reader_(reader) {}

  absl::StatusOr<PyRef> Run();

 private:
  absl::Status Need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) {
      return absl::InvalidArgumentError("data.pkl is truncated");
    }
    return absl::OkStatus();
  }
  template <typename T>
  T ReadLE() {
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  absl::StatusOr<std::string> ReadLine() {
    const uint8_t* nl =
        static_cast<const uint8_t*>(std::memchr(p_, '\n', static_cast<size_t>(end_ - p_)));
    if (nl == nullptr) return absl::InvalidArgumentError("data.pkl is truncated");
    std::string s(reinterpret_cast<const char*>(p_), nl - p_);
    p_ = nl + 1;
    return s;
  }
  absl::StatusOr<PyRef> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) {
      return absl::InvalidArgumentError("data.pkl: stack underflow");
    }
    PyRef r = stack_.back();
    stack_.pop_back();
    return r;
  }
  absl::StatusOr<std::vector<PyRef>> PopToMark() {
    if (marks_.empty()) return absl::InvalidArgumentError("data.pkl: no mark");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  absl::StatusOr<PyRef> Reduce(const PyRef& callable, const PyRef& args);
  absl::StatusOr<PyRef> PersistentLoad(const PyRef& pid);

  const uint8_t* p_;
  const uint8_t* end_;
  caffe2::serialize::PyTorchStreamReader* reader_;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PyRef> memo_;
  std::map<std::string, PyRef> storages_;
};

std::optional<torch::ScalarType> StorageDtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> kTypes = {
      {"FloatStorage", torch::kFloat}, {"DoubleStorage", torch::kDouble},
      {"HalfStorage", torch::kHalf},   {"BFloat16Storage", torch::kBFloat16},
      {"LongStorage", torch::kLong},   {"IntStorage", torch::kInt},
      {"ShortStorage", torch::kShort}, {"CharStorage", torch::kChar},
      {"ByteStorage", torch::kByte},   {"BoolStorage", torch::kBool},
  };
  auto it = kTypes.find(name);
  if (it == kTypes.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::vector<int64_t>> IntTuple(const PyRef& r, const char* what) {
  auto* items = std::get_if<std::vector<PyRef>>(&r->v);
  if (items == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("data.pkl: ", what, " is not a tuple"));
  }
  std::vector<int64_t> out;
  for (const auto& item : *items) {
    auto* i = std::get_if<int64_t>(&item->v);
    if (i == nullptr || *i < 0) {
      return absl::InvalidArgumentError(absl::StrCat("data.pkl: bad ", what));
    }
    out.push_back(*i);
  }
  return out;
}

absl::StatusOr<PyRef> Unpickler::PersistentLoad(const PyRef& pid) {
  auto* t = std::get_if<std::vector<PyRef>>(&pid->v);
  if (t == nullptr || t->size() < 5) {
    return absl::InvalidArgumentError("data.pkl: unsupported persistent id");
  }
  auto* kind = std::get_if<std::string>(&(*t)[0]->v);
  auto* type = std::get_if<PyGlobal>(&(*t)[1]->v);
  auto* key = std::get_if<std::string>(&(*t)[2]->v);
  auto* numel = std::get_if<int64_t>(&(*t)[4]->v);
  if (kind == nullptr || *kind != "storage" || type == nullptr || key == nullptr ||
      numel == nullptr || *numel < 0) {
    return absl::InvalidArgumentError("data.pkl: unsupported persistent id");
  }
  auto cached = storages_.find(*key);
  if (cached != storages_.end()) return cached->second;
  auto dtype = StorageDtype(type->name);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported storage type ", type->Qualified()));
  }
  const std::string record = "data/" + *key;
  if (!reader_->hasRecord(record)) {
    return absl::InvalidArgumentError(absl::StrCat("archive has no record ", record));
  }
  at::DataPtr data;
  size_t bytes = 0;
  std::tie(data, bytes) = reader_->getRecord(record);
  const size_t elem = c10::elementSize(*dtype);
  if (bytes != static_cast<size_t>(*numel) * elem) {
    return absl::InvalidArgumentError(
        absl::StrCat("record ", record, " holds ", bytes, " bytes, expected ", *numel * elem));
  }
  torch::Tensor flat = torch::empty({*numel}, torch::TensorOptions().dtype(*dtype));
  if (bytes > 0) std::memcpy(flat.data_ptr(), data.get(), bytes);
  PyRef r = Make(PyStorage{flat});
  storages_[*key] = r;
  return r;
}

absl::StatusOr<PyRef> Unpickler::Reduce(const PyRef& callable, const PyRef& args_ref) {
  auto* g = std::get_if<PyGlobal>(&callable->v);
  auto* args = std::get_if<std::vector<PyRef>>(&args_ref->v);
  if (g == nullptr || args == nullptr) {
    return absl::InvalidArgumentError("data.pkl: REDUCE on a non-global");
  }
  const std::string q = g->Qualified();
  if (q == "collections.OrderedDict" || q == "builtins.dict") {
    return Make(PyDict{});
  }
  if (q == "torch._utils._rebuild_tensor_v2" || q == "torch._utils._rebuild_tensor") {
    if (args->size() < 4) {
      return absl::InvalidArgumentError("data.pkl: short _rebuild_tensor_v2");
    }
    auto* storage = std::get_if<PyStorage>(&(*args)[0]->v);
    auto* offset = std::get_if<int64_t>(&(*args)[1]->v);
    if (storage == nullptr || offset == nullptr || *offset < 0) {
      return absl::InvalidArgumentError("data.pkl: bad tensor storage");
    }
    auto size = IntTuple((*args)[2], "tensor size");
    if (!size.ok()) return size.status();
    auto stride = IntTuple((*args)[3], "tensor stride");
    if (!stride.ok()) return stride.status();
    if (size->size() != stride->size() || size->size() > 8) {
      return absl::InvalidArgumentError("data.pkl: bad tensor rank");
    }
    // The largest element index the view touches must lie in the storage.
    int64_t last = *offset;
    bool empty = false;
    for (size_t i = 0; i < size->size(); ++i) {
      if ((*size)[i] == 0) empty = true;
      if ((*size)[i] > (int64_t{1} << 40) || (*stride)[i] > (int64_t{1} << 40)) {
        return absl::InvalidArgumentError("data.pkl: tensor too large");
      }
      last += ((*size)[i] - 1) * (*stride)[i];
    }
    if (!empty && last >= storage->flat.numel()) {
      return absl::InvalidArgumentError("data.pkl: tensor view exceeds its storage");
    }
    torch::Tensor t = empty
                          ? torch::empty(*size, storage->flat.options())
                          : storage->flat.as_strided(*size, *stride, *offset).contiguous().clone();
    return Make(t);
  }
  if (q == "torch._utils._rebuild_parameter" || q == "torch._utils._rebuild_parameter_with_state") {
    if (args->empty() || !std::holds_alternative<torch::Tensor>((*args)[0]->v)) {
      return absl::InvalidArgumentError("data.pkl: bad _rebuild_parameter");
    }
    return (*args)[0];
  }
  return Make(PyOpaque{q});
}

absl::StatusOr<PyRef> Unpickler::Run() {
  while (true) {
    if (p_ >= end_) return absl::InvalidArgumentError("data.pkl ends without STOP");
    const uint8_t op = *p_++;
    switch (op) {
      case 0x80: {  // PROTO
        if (auto s = Need(1); !s.ok()) return s;
        ++p_;
        break;
      }
      case 0x95: {  // FRAME
        if (auto s = Need(8); !s.ok()) return s;
        p_ += 8;
        break;
      }
      case '.': {  // STOP
        return Pop();
      }
      case 'c': {  // GLOBAL
        auto module = ReadLine();
        if (!module.ok()) return module.status();
        auto name = ReadLine();
        if (!name.ok()) return name.status();
        stack_.push_back(Make(PyGlobal{*module, *name}));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = Pop();
        if (!name.ok()) return name.status();
        auto module = Pop();
        if (!module.ok()) return module.status();
        auto* n = std::get_if<std::string>(&(*name)->v);
        auto* m = std::get_if<std::string>(&(*module)->v);
        if (n == nullptr || m == nullptr) {
          return absl::InvalidArgumentError("data.pkl: bad STACK_GLOBAL");
        }
        stack_.push_back(Make(PyGlobal{*m, *n}));
        break;
      }
      case '(':  // MARK
        marks_.push_back(stack_.size());
        break;
      case ')':  // EMPTY_TUPLE
        stack_.push_back(Make(std::vector<PyRef>{}));
        break;
      case 't': {  // TUPLE
        auto items = PopToMark();
        if (!items.ok()) return items.status();
        stack_.push_back(Make(std::move(*items)));
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        std::vector<PyRef> items(n);
        for (size_t i = 0; i < n; ++i) {
          auto v = Pop();
          if (!v.ok()) return v.status();
          items[n - 1 - i] = *v;
        }
        stack_.push_back(Make(std::move(items)));
        break;
      }
      case ']': {  // EMPTY_LIST
        PyRef l = Make(std::vector<PyRef>{});
        l->is_list = true;
        stack_.push_back(l);
        break;
      }
      case 'a':
      case 'e': {  // APPEND, APPENDS
        std::vector<PyRef> items;
        if (op == 'a') {
          auto v = Pop();
          if (!v.ok()) return v.status();
          items.push_back(*v);
        } else {
          auto v = PopToMark();
          if (!v.ok()) return v.status();
          items = std::move(*v);
        }
        if (stack_.empty()) return absl::InvalidArgumentError("data.pkl: APPEND without list");
        auto* l = std::get_if<std::vector<PyRef>>(&stack_.back()->v);
        if (l == nullptr) return absl::InvalidArgumentError("data.pkl: APPEND to non-list");
        l->insert(l->end(), items.begin(), items.end());
        break;
      }
      case '}':  // EMPTY_DICT
        stack_.push_back(Make(PyDict{}));
        break;
      case 's':
      case 'u': {  // SETITEM, SETITEMS
        std::vector<PyRef> items;
        if (op == 's') {
          auto v = Pop();
          if (!v.ok()) return v.status();
          auto k = Pop();
          if (!k.ok()) return k.status();
          items = {*k, *v};
        } else {
          auto v = PopToMark();
          if (!v.ok()) return v.status();
          items = std::move(*v);
        }
        if (items.size() % 2 != 0 || stack_.empty()) {
          return absl::InvalidArgumentError("data.pkl: bad SETITEMS");
        }
        auto* d = std::get_if<PyDict>(&stack_.back()->v);
        if (d == nullptr) return absl::InvalidArgumentError("data.pkl: SETITEMS on non-dict");
        for (size_t i = 0; i < items.size(); i += 2) {
          d->items.emplace_back(items[i], items[i + 1]);
        }
        break;
      }
      case 'q': {  // BINPUT
        if (auto s = Need(1); !s.ok()) return s;
        if (stack_.empty()) return absl::InvalidArgumentError("data.pkl: BINPUT on empty stack");
        memo_[*p_++] = stack_.back();
        break;
      }
      case 'r': {  // LONG_BINPUT
        if (auto s = Need(4); !s.ok()) return s;
        if (stack_.empty()) return absl::InvalidArgumentError("data.pkl: PUT on empty stack");
        memo_[ReadLE<uint32_t>()] = stack_.back();
        break;
      }
      case 0x94: {  // MEMOIZE
        if (stack_.empty()) return absl::InvalidArgumentError("data.pkl: MEMOIZE on empty stack");
        const uint64_t key = memo_.size();
        memo_[key] = stack_.back();
        break;
      }
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        uint64_t key;
        if (op == 'h') {
          if (auto s = Need(1); !s.ok()) return s;
          key = *p_++;
        } else {
          if (auto s = Need(4); !s.ok()) return s;
          key = ReadLE<uint32_t>();
        }
        auto it = memo_.find(key);
        if (it == memo_.end()) return absl::InvalidArgumentError("data.pkl: bad memo key");
        stack_.push_back(it->second);
        break;
      }
      case 'X':
      case 0x8c:
      case 'T':
      case 'U':
      case 0x8d:
      case 'B':
      case 'C': {  // strings and bytes
        uint64_t n;
        if (op == 0x8c || op == 'U' || op == 'C') {
          if (auto s = Need(1); !s.ok()) return s;
          n = *p_++;
        } else if (op == 0x8d) {
          if (auto s = Need(8); !s.ok()) return s;
          n = ReadLE<uint64_t>();
        } else {
          if (auto s = Need(4); !s.ok()) return s;
          n = ReadLE<uint32_t>();
        }
        if (auto s = Need(n); !s.ok()) return s;
        stack_.push_back(Make(std::string(reinterpret_cast<const char*>(p_), n)));
        p_ += n;
        break;
      }
      case 'K': {  // BININT1
        if (auto s = Need(1); !s.ok()) return s;
        stack_.push_back(Make(int64_t{*p_++}));
        break;
      }
      case 'M': {  // BININT2
        if (auto s = Need(2); !s.ok()) return s;
        stack_.push_back(Make(int64_t{ReadLE<uint16_t>()}));
        break;
      }
      case 'J': {  // BININT
        if (auto s = Need(4); !s.ok()) return s;
        stack_.push_back(Make(int64_t{ReadLE<int32_t>()}));
        break;
      }
      case 0x8a: {  // LONG1
        if (auto s = Need(1); !s.ok()) return s;
        const size_t n = *p_++;
        if (n > 8) return absl::InvalidArgumentError("data.pkl: integer too large");
        if (auto s = Need(n); !s.ok()) return s;
        uint64_t u = 0;
        for (size_t i = 0; i < n; ++i) u |= uint64_t{p_[i]} << (8 * i);
        if (n > 0 && n < 8 && (p_[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);
        p_ += n;
        stack_.push_back(Make(static_cast<int64_t>(u)));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        if (auto s = Need(8); !s.ok()) return s;
        uint64_t u = 0;
        for (int i = 0; i < 8; ++i) u = (u << 8) | p_[i];
        p_ += 8;
        double d;
        std::memcpy(&d, &u, 8);
        stack_.push_back(Make(d));
        break;
      }
      case 0x88:
        stack_.push_back(Make(true));
        break;
      case 0x89:
        stack_.push_back(Make(false));
        break;
      case 'N':
        stack_.push_back(Make(std::monostate{}));
        break;
      case 'Q': {  // BINPERSID
        auto pid = Pop();
        if (!pid.ok()) return pid.status();
        auto r = PersistentLoad(*pid);
        if (!r.ok()) return r.status();
        stack_.push_back(*r);
        break;
      }
      case 'R':
      case 0x81: {  // REDUCE, NEWOBJ
        auto args = Pop();
        if (!args.ok()) return args.status();
        auto callable = Pop();
        if (!callable.ok()) return callable.status();
        auto r = Reduce(*callable, *args);
        if (!r.ok()) return r.status();
        stack_.push_back(*r);
        break;
      }
      case 'b': {  // BUILD: object state (e.g. a state dict's _metadata); unused
        auto state = Pop();
        if (!state.ok()) return state.status();
        if (stack_.empty()) return absl::InvalidArgumentError("data.pkl: BUILD on empty stack");
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("data.pkl: unsupported pickle opcode 0x", absl::Hex(op)));
    }
  }
}

absl::StatusOr<StateDict> DictToStateDict(const PyRef& root) {
  const PyDict* dict = std::get_if<PyDict>(&root->v);
  if (dict == nullptr) {
    return absl::InvalidArgumentError("checkpoint's top-level object is not a dict");
  }
  // Training checkpoints wrap the weights: {"state_dict": {...}, "epoch": ...}.
  for (const char* wrapper : {"state_dict", "model", "model_state_dict"}) {
    for (const auto& [k, v] : dict->items) {
      auto* ks = std::get_if<std::string>(&k->v);
      if (ks != nullptr && *ks == wrapper && std::holds_alternative<PyDict>(v->v)) {
        return DictToStateDict(v);
      }
    }
  }
  StateDict out;
  bool all_module_prefix = !dict->items.empty();
  for (const auto& [k, v] : dict->items) {
    auto* ks = std::get_if<std::string>(&k->v);
    if (ks == nullptr) return absl::InvalidArgumentError("checkpoint has a non-string key");
    auto* t = std::get_if<torch::Tensor>(&v->v);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint entry '", *ks, "' is not a tensor"));
    }
    if (!absl::StartsWith(*ks, "module.")) all_module_prefix = false;
    out.emplace_back(*ks, *t);
  }
  if (all_module_prefix) {
    for (auto& [k, v] : out) k = k.substr(7);
  }
  return out;
}

absl::StatusOr<std::string> ReadHead(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open weights file ", path));
  std::string head(n, '\0');
  in.read(head.data(), static_cast<std::streamsize>(n));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

const std::map<std::string, torch::ScalarType>& SafetensorsDtypes() {
  static const auto* const kTypes = new std::map<std::string, torch::ScalarType>{
      {"F32", torch::kFloat},     {"F64", torch::kDouble}, {"F16", torch::kHalf},
      {"BF16", torch::kBFloat16}, {"I64", torch::kLong},   {"I32", torch::kInt},
      {"I16", torch::kShort},     {"I8", torch::kChar},    {"U8", torch::kByte},
      {"BOOL", torch::kBool},
  };
  return *kTypes;
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
    Unpickler unpickler(static_cast<const uint8_t*>(pkl.get()), size, &reader);
    auto root = unpickler.Run();
    if (!root.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", root.status().message()));
    }
    auto sd = DictToStateDict(*root);
    if (!sd.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", sd.status().message()));
    }
    return sd;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unreadable torch archive: ", e.what()));
  }
}

namespace {

// A read-only istream over memory the caller keeps alive.
struct MemoryBuf : std::streambuf {
  explicit MemoryBuf(std::string_view bytes) {
    char* p = const_cast<char*>(bytes.data());
    setg(p, p, p + bytes.size());
  }
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    char* target = (dir == std::ios_base::beg   ? eback()
                    : dir == std::ios_base::cur ? gptr()
                                                : egptr()) +
                   off;
    if (target < eback() || target > egptr()) return pos_type(off_type(-1));
    setg(eback(), target, egptr());
    return pos_type(target - eback());
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode mode) override {
    return seekoff(off_type(pos), std::ios_base::beg, mode);
  }
};

// Parses safetensors from `in`, which holds file_size bytes; `path` names
// the source in errors.
absl::StatusOr<StateDict> ParseSafetensors(std::istream& in, uint64_t file_size,
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
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  struct Entry {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
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
    auto dt = SafetensorsDtypes().find(e["dtype"].get<std::string>());
    if (dt == SafetensorsDtypes().end()) return bad("unsupported dtype");
    Entry entry{it.key(), dt->second, {}, 0, 0};
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
    if (entry.end - entry.begin != numel * c10::elementSize(entry.dtype)) {
      return bad("byte length does not match dtype and shape");
    }
    entries.push_back(std::move(entry));
  }
  // nlohmann::json orders keys alphabetically; keep the file's data order.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  StateDict out;
  for (const Entry& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    in.seekg(static_cast<std::streamoff>(data_start + e.begin));
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
  MemoryBuf buf(bytes);
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
    std::string dtype;
    for (const auto& [code, type] : SafetensorsDtypes()) {
      if (type == t.scalar_type()) dtype = code;
    }
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
