#include "client/flags.h"

#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ghostserve::client {

void FlagSet::String(const std::string& name, std::string* out) {
  flags_[name] = {true, [out](const std::string& v) {
                    *out = v;
                    return absl::OkStatus();
                  }};
}

void FlagSet::Int(const std::string& name, int64_t min, int64_t max, int64_t* out) {
  flags_[name] = {
      true, [=](const std::string& v) {
        int64_t n;
        if (!absl::SimpleAtoi(v, &n) || n < min || n > max) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer in [",
                                                         min, ", ", max, "], got \"", v, "\""));
        }
        *out = n;
        return absl::OkStatus();
      }};
}

void FlagSet::Double(const std::string& name, double min, double max, double* out) {
  flags_[name] = {
      true, [=](const std::string& v) {
        double d;
        if (!absl::SimpleAtod(v, &d) || !std::isfinite(d) || d < min || d > max) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number in [", min,
                                                         ", ", max, "], got \"", v, "\""));
        }
        *out = d;
        return absl::OkStatus();
      }};
}

void FlagSet::Bool(const std::string& name, bool* out) {
  flags_[name] = {false, [=](const std::string& v) {
                    if (v.empty() || v == "true" || v == "1") {
                      *out = true;
                    } else if (v == "false" || v == "0") {
                      *out = false;
                    } else {
                      return absl::InvalidArgumentError(absl::StrCat(
                          "--", name, " takes no value or true/false, got \"", v, "\""));
                    }
                    return absl::OkStatus();
                  }};
}

absl::StatusOr<std::vector<std::string>> FlagSet::Parse(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg == "-h" || arg == "--help") {
      help_ = true;
      continue;
    }
    // A lone "-" conventionally names stdin; keep it positional.
    if (arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", arg, " (flags start with --)"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_inline_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_inline_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (it->second.takes_value && !has_inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("missing value for --", name));
      }
      value = args[++i];
    }
    if (absl::Status s = it->second.set(value); !s.ok()) return s;
  }
  return positional;
}

}  // namespace ghostserve::client
