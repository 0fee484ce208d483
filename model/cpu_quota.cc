#include "model/cpu_quota.h"

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ghostserve::model {

int CpusFromCpuMax(std::string_view contents) {
  std::vector<absl::string_view> parts = absl::StrSplit(
      absl::StripAsciiWhitespace(absl::string_view(contents.data(), contents.size())), ' ',
      absl::SkipEmpty());
  int64_t quota = 0, period = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &quota) ||
      !absl::SimpleAtoi(parts[1], &period) || quota <= 0 || period <= 0) {
    return 0;  // "max ..." or malformed: no limit
  }
  const int64_t cpus = (quota + period - 1) / period;
  return cpus > 1'000'000 ? 0 : static_cast<int>(cpus);
}

int CgroupCpuLimit(const std::string& cgroup_root, const std::string& proc_self_cgroup) {
  std::ifstream cgroups(proc_self_cgroup);
  std::string line, path;
  while (std::getline(cgroups, line)) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);  // the v2 hierarchy
  }
  if (path.empty() || path[0] != '/' || path.find("/..") != std::string::npos) return 0;
  int tightest = 0;
  while (true) {
    std::ifstream f(cgroup_root + (path == "/" ? "" : path) + "/cpu.max");
    if (f) {
      std::stringstream text;
      text << f.rdbuf();
      const int cpus = CpusFromCpuMax(text.str());
      if (cpus > 0 && (tightest == 0 || cpus < tightest)) tightest = cpus;
    }
    if (path == "/") break;
    const size_t slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return tightest;
}

}  // namespace ghostserve::model
