#include "model/threading.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <omp.h>
#include <sched.h>

#include <mutex>

#include "model/cpu_quota.h"

namespace ghostserve::model {

int AvailableCpus() {
  int cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
  const int quota = CgroupCpuLimit();
  if (quota > 0 && (cpus <= 0 || quota < cpus)) cpus = quota;
  return cpus > 0 ? cpus : 1;
}

int ConfigureThreads(int intra_op_threads) {
  const int n = intra_op_threads > 0 ? intra_op_threads : AvailableCpus();
  // OpenBLAS reads OPENBLAS_NUM_THREADS when it is loaded, before main, so
  // set its pool size through its API when the loaded BLAS is OpenBLAS.
  using SetThreads = void (*)(int);
  if (auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
  static std::once_flag interop_once;
  std::call_once(interop_once, [] {
    try {
      at::set_num_interop_threads(1);
    } catch (const std::exception&) {
      // Already started by an earlier inter-op call; harmless.
    }
  });
  at::set_num_threads(n);
  // Fix this thread's count now; threads started later (gRPC, decoding) take
  // this process-wide value when they first touch ATen's thread pool.
  at::get_num_threads();
  // Denormal floats make convolutions many times slower; GhostNet never
  // needs them.
  at::globalContext().setFlushDenormal(true);
  return n;
}

void ConfigureInferenceThread(int intra_op_threads) {
  // ATen initialises a thread's OpenMP count from its process-wide setting on
  // first use; do that first, then raise the count for this thread only, so
  // the process-wide value (1 in the server) stays what other threads get.
  at::get_num_threads();
  omp_set_num_threads(intra_op_threads > 0 ? intra_op_threads : AvailableCpus());
  at::globalContext().setFlushDenormal(true);
}

}  // namespace ghostserve::model
