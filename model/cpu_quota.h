// CPUs a cgroup v2 CPU quota allows (Kubernetes CPU limits, docker --cpus).
// The affinity mask does not show a CFS quota: a pod limited to 2 CPUs on a
// 64-CPU node sees 64 there. Torch-free.
#ifndef GHOSTSERVE_MODEL_CPU_QUOTA_H_
#define GHOSTSERVE_MODEL_CPU_QUOTA_H_

#include <string>
#include <string_view>

namespace ghostserve::model {

// A cpu.max file's contents ("<quota> <period>" in microseconds, or "max
// <period>"): ceil(quota / period), or 0 for no limit or unreadable text.
int CpusFromCpuMax(std::string_view contents);

// The tightest cpu.max on the path from this process's cgroup v2 (read from
// `proc_self_cgroup`, the "0::<path>" line) up to `cgroup_root`, as
// CpusFromCpuMax counts it; 0 when no level sets a quota or there is no
// cgroup v2.
int CgroupCpuLimit(const std::string& cgroup_root = "/sys/fs/cgroup",
                   const std::string& proc_self_cgroup = "/proc/self/cgroup");

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_CPU_QUOTA_H_
