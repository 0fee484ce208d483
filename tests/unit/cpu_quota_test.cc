// cgroup v2 CPU quotas (model/cpu_quota.h), read from real files laid out as
// /sys/fs/cgroup and /proc/self/cgroup are.
#include "model/cpu_quota.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace ghostserve::model {
namespace {

namespace fs = std::filesystem;

TEST(CpuQuotaTest, ParsesCpuMax) {
  EXPECT_EQ(CpusFromCpuMax("max 100000\n"), 0);
  EXPECT_EQ(CpusFromCpuMax("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCpuMax("150000 100000"), 2);  // 1.5 CPUs round up
  EXPECT_EQ(CpusFromCpuMax("50000 100000"), 1);
  EXPECT_EQ(CpusFromCpuMax("100000 100000"), 1);
  for (const char* bad : {"", "garbage", "100000", "-5 100000", "100000 0", "1 2 3"}) {
    EXPECT_EQ(CpusFromCpuMax(bad), 0) << bad;
  }
}

class CgroupTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("cpu_quota_test." + std::to_string(getpid()));
    fs::create_directories(root_ / "kubepods" / "pod1" / "ctr");
  }
  void TearDown() override { fs::remove_all(root_); }
  void Write(const fs::path& p, const std::string& text) {
    std::ofstream(p) << text;
  }
  int Limit(const std::string& self_cgroup) {
    Write(root_ / "self_cgroup", self_cgroup);
    return CgroupCpuLimit((root_ / "sys").string(), (root_ / "self_cgroup").string());
  }
  fs::path root_;
};

TEST_F(CgroupTreeTest, TightestLevelOnThePathWins) {
  const fs::path sys = root_ / "sys";
  fs::create_directories(sys / "kubepods" / "pod1" / "ctr");
  Write(sys / "kubepods" / "cpu.max", "max 100000\n");
  Write(sys / "kubepods" / "pod1" / "cpu.max", "300000 100000\n");
  Write(sys / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000\n");
  EXPECT_EQ(Limit("0::/kubepods/pod1/ctr\n"), 3);
  Write(sys / "kubepods" / "pod1" / "ctr" / "cpu.max", "120000 100000\n");
  EXPECT_EQ(Limit("0::/kubepods/pod1/ctr\n"), 2);
  // Inside a cgroup namespace (a container) the path is "/" and the file is
  // at the root.
  Write(sys / "cpu.max", "400000 100000\n");
  EXPECT_EQ(Limit("0::/\n"), 4);
}

TEST_F(CgroupTreeTest, NoQuotaNoCgroupV2OrNoFilesMeansNoLimit) {
  const fs::path sys = root_ / "sys";
  fs::create_directories(sys / "a");
  Write(sys / "a" / "cpu.max", "max 100000\n");
  EXPECT_EQ(Limit("0::/a\n"), 0);
  // cgroup v1 only: no "0::" line.
  EXPECT_EQ(Limit("12:cpu,cpuacct:/a\n"), 0);
  EXPECT_EQ(Limit("0::/missing/dir\n"), 0);
  EXPECT_EQ(Limit("0::relative\n"), 0);
  EXPECT_EQ(CgroupCpuLimit((root_ / "sys").string(), (root_ / "no_such_file").string()), 0);
}

}  // namespace
}  // namespace ghostserve::model
