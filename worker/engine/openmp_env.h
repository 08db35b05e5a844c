// OpenMP's idle policy for the engine's processes.
//
// libtorch's element-wise kernels run on OpenMP threads, and its matrix
// products on OpenBLAS's own threads. With OpenMP's default (ACTIVE) policy,
// idle OpenMP threads spin and starve OpenBLAS: on 2 cores, 2 intra-op threads
// train 2.6-3x slower than 1 (bench/engine_threads.sh). With PASSIVE they
// sleep, and intra-op threads = cores is the fastest setting for every preset.
//
// libgomp reads OMP_WAIT_POLICY once, when it is loaded, before main() runs,
// so the only way to set it from inside is to re-execute the process with it.
#ifndef TUNEFORGE_WORKER_ENGINE_OPENMP_ENV_H_
#define TUNEFORGE_WORKER_ENGINE_OPENMP_ENV_H_

#include <unistd.h>

#include <cstdlib>

namespace tuneforge::engine {

// Call first thing in main(). When OMP_WAIT_POLICY is unset, sets it to
// PASSIVE and re-executes the program with the same arguments; a value the
// user set is kept. If the re-exec fails, the program carries on as it is.
inline void UsePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);
}

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_OPENMP_ENV_H_
