#include "model/pickle_reader.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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
  DType dtype;
  RecordBytes bytes;
};
struct PyTensor {
  size_t index;  // into Unpickler::tensors_
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
               PyDict, PyGlobal, PyStorage, PyTensor, PyOpaque>
      v;
  bool is_list = false;
};

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const RecordLoader* load)
      : p_(data), end_(data + size), load_(load) {}
  // Breaks reference cycles (a list or dict can hold itself) and frees
  // deeply nested values without recursing.
  ~Unpickler() {
    stack_.clear();
    memo_.clear();
    storages_.clear();
    for (const PyRef& r : arena_) r->v = std::monostate{};
  }

  absl::StatusOr<PyRef> Run();
  absl::StatusOr<PickledStateDict> ToStateDict(const PyRef& root);

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
  absl::Status AddEntries(const PyRef& root, int depth, PickledStateDict& out);
  PyRef Make(decltype(PyValue::v) v) {
    auto r = std::make_shared<PyValue>();
    r->v = std::move(v);
    arena_.push_back(r);
    return r;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  const RecordLoader* load_;
  std::vector<PyRef> arena_;  // every value made, so the destructor can free them
  std::vector<PickledTensor> tensors_;
  uint64_t storage_bytes_ = 0;  // loaded storages
  uint64_t view_bytes_ = 0;     // all tensor views
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PyRef> memo_;
  std::map<std::string, PyRef> storages_;
};

std::optional<DType> StorageDtype(const std::string& name) {
  static const auto* const kTypes = new std::map<std::string, DType>{
      {"FloatStorage", DType::kF32}, {"DoubleStorage", DType::kF64},
      {"HalfStorage", DType::kF16},  {"BFloat16Storage", DType::kBF16},
      {"LongStorage", DType::kI64},  {"IntStorage", DType::kI32},
      {"ShortStorage", DType::kI16}, {"CharStorage", DType::kI8},
      {"ByteStorage", DType::kU8},   {"BoolStorage", DType::kBool},
  };
  auto it = kTypes->find(name);
  if (it == kTypes->end()) return std::nullopt;
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
  std::optional<RecordBytes> data = (*load_)(record);
  if (!data) {
    return absl::InvalidArgumentError(absl::StrCat("archive has no record ", record));
  }
  const size_t elem = DTypeSize(*dtype);
  const size_t bytes = data->size;
  // numel * elem may wrap for a hostile numel; compare by division first.
  if (static_cast<uint64_t>(*numel) > bytes / elem || bytes != static_cast<size_t>(*numel) * elem) {
    return absl::InvalidArgumentError(absl::StrCat("record ", record, " holds ", bytes,
                                                   " bytes, expected ",
                                                   static_cast<uint64_t>(*numel) * elem));
  }
  storage_bytes_ += bytes;
  PyRef r = Make(PyStorage{*dtype, std::move(*data)});
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
    const int64_t storage_numel =
        static_cast<int64_t>(storage->bytes.size / DTypeSize(storage->dtype));
    int64_t last = *offset;
    int64_t numel = 1;
    bool empty = false;
    bool overflow = false;
    for (size_t i = 0; i < size->size(); ++i) {
      if ((*size)[i] == 0) empty = true;
      if ((*size)[i] > (int64_t{1} << 40) || (*stride)[i] > (int64_t{1} << 40)) {
        return absl::InvalidArgumentError("data.pkl: tensor too large");
      }
      int64_t step = 0;
      overflow |= __builtin_mul_overflow((*size)[i] - 1, (*stride)[i], &step);
      overflow |= __builtin_add_overflow(last, step, &last);
      overflow |= __builtin_mul_overflow(numel, (*size)[i], &numel);
    }
    if (!empty && (overflow || last >= storage_numel)) {
      return absl::InvalidArgumentError("data.pkl: tensor view exceeds its storage");
    }
    // Zero strides could make a one-element storage describe a huge tensor;
    // bound what the views add up to by the storage bytes actually present.
    if (!empty) {
      if (numel > storage_numel) {
        return absl::InvalidArgumentError("data.pkl: tensor view is larger than its storage");
      }
      view_bytes_ += static_cast<uint64_t>(numel) * DTypeSize(storage->dtype);
      if (view_bytes_ > 2 * storage_bytes_ + (uint64_t{1} << 20)) {
        return absl::InvalidArgumentError("data.pkl: tensor views exceed their storages");
      }
    }
    PickledTensor t;
    t.dtype = storage->dtype;
    t.shape = std::move(*size);
    t.strides = std::move(*stride);
    t.offset = *offset;
    if (!empty) t.storage = storage->bytes;
    tensors_.push_back(std::move(t));
    return Make(PyTensor{tensors_.size() - 1});
  }
  if (q == "torch._utils._rebuild_parameter" || q == "torch._utils._rebuild_parameter_with_state") {
    if (args->empty() || !std::holds_alternative<PyTensor>((*args)[0]->v)) {
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

absl::Status Unpickler::AddEntries(const PyRef& root, int depth, PickledStateDict& out) {
  const PyDict* dict = std::get_if<PyDict>(&root->v);
  if (dict == nullptr) {
    return absl::InvalidArgumentError("checkpoint's top-level object is not a dict");
  }
  // Training checkpoints wrap the weights: {"state_dict": {...}, "epoch": ...}.
  for (const char* wrapper : {"state_dict", "model", "model_state_dict"}) {
    for (const auto& [k, v] : dict->items) {
      auto* ks = std::get_if<std::string>(&k->v);
      if (ks != nullptr && *ks == wrapper && std::holds_alternative<PyDict>(v->v)) {
        // A dict can hold itself; real checkpoints nest once or twice.
        if (depth >= 8) {
          return absl::InvalidArgumentError("checkpoint nests state dicts too deeply");
        }
        return AddEntries(v, depth + 1, out);
      }
    }
  }
  bool all_module_prefix = !dict->items.empty();
  for (const auto& [k, v] : dict->items) {
    auto* ks = std::get_if<std::string>(&k->v);
    if (ks == nullptr) return absl::InvalidArgumentError("checkpoint has a non-string key");
    auto* t = std::get_if<PyTensor>(&v->v);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint entry '", *ks, "' is not a tensor"));
    }
    if (!absl::StartsWith(*ks, "module.")) all_module_prefix = false;
    out.entries.emplace_back(*ks, t->index);
  }
  if (all_module_prefix) {
    for (auto& [k, v] : out.entries) k = k.substr(7);
  }
  return absl::OkStatus();
}

absl::StatusOr<PickledStateDict> Unpickler::ToStateDict(const PyRef& root) {
  PickledStateDict out;
  if (auto s = AddEntries(root, 0, out); !s.ok()) return s;
  out.tensors = std::move(tensors_);
  return out;
}

}  // namespace

absl::StatusOr<PickledStateDict> ReadPickledStateDict(std::string_view pkl,
                                                      const RecordLoader& load) {
  Unpickler unpickler(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size(), &load);
  auto root = unpickler.Run();
  if (!root.ok()) return root.status();
  return unpickler.ToStateDict(*root);
}

}  // namespace ghostserve::model
