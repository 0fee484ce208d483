// Process-wide CPU thread settings for LibTorch and BLAS.
#ifndef GHOSTSERVE_MODEL_THREADING_H_
#define GHOSTSERVE_MODEL_THREADING_H_

namespace ghostserve::model {

// Sets LibTorch's intra-op (OpenMP) pool to `intra_op_threads` (<= 0 means
// the number of CPUs this process may use), its inter-op pool to 1, and
// OpenBLAS's own pool to 1 thread. LibTorch calls BLAS from inside its OpenMP
// workers; with OpenBLAS's pthread pool also sized to the core count the two
// pools spin against each other and GhostNet runs 3x slower at batch 1
// (measured: eager PyTorch 24 -> 73 img/s with OPENBLAS_NUM_THREADS=1).
// Call once, early in main, before any inference. Returns the intra-op count.
int ConfigureThreads(int intra_op_threads);

// Per-thread part of the above, for a thread that will run inference (an
// inference executor): sizes the OpenMP team this thread leads (this thread
// only; the process-wide count is left alone) and sets
// flush-to-zero / denormals-are-zero, which live in each thread's MXCSR (new
// threads, and the OpenMP workers they start, inherit their creator's). The
// untrained served models were 2.4x slower at batch 1 on a worker thread
// without it. <= 0 means the CPUs available.
void ConfigureInferenceThread(int intra_op_threads);

// CPUs this process may use, at least 1: those of its affinity mask
// (sched_getaffinity: cpusets, taskset), or fewer if a cgroup v2 CPU quota
// (cpu.max: a Kubernetes CPU limit, docker --cpus) allows fewer, rounded up.
int AvailableCpus();

}  // namespace ghostserve::model

#endif  // GHOSTSERVE_MODEL_THREADING_H_
