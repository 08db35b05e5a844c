// While a KeepFreedMemory lives, memory freed by one training step stays
// with the process for the next. By default glibc gives the top of its heap
// back to the kernel, and every step then faults its activations' pages in
// again, each one zeroed by the kernel (about 5% of a step here). Setting
// one of these options turns off glibc's own adaptive thresholds, so both
// are set: allocations up to 32 MiB (its maximum) come from the heap, and
// the heap is not trimmed. On destruction glibc's default values come back
// and the free memory is returned. The peak resident memory is unchanged;
// between peaks the process keeps what it freed.
//
//   { KeepFreedMemory keep; Train(...); }
//
// Process-wide: one at a time. No libtorch.
#ifndef TUNEFORGE_WORKER_ENGINE_KEEP_FREED_MEMORY_H_
#define TUNEFORGE_WORKER_ENGINE_KEEP_FREED_MEMORY_H_

#include <malloc.h>

namespace tuneforge::engine {

class KeepFreedMemory {
 public:
  KeepFreedMemory() {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 64 << 20);
#endif
  }
  ~KeepFreedMemory() {
#ifdef __GLIBC__
    mallopt(M_TOP_PAD, 128 << 10);
    mallopt(M_TRIM_THRESHOLD, 128 << 10);
    mallopt(M_MMAP_THRESHOLD, 128 << 10);
    malloc_trim(0);
#endif
  }
  KeepFreedMemory(const KeepFreedMemory&) = delete;
  KeepFreedMemory& operator=(const KeepFreedMemory&) = delete;
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_KEEP_FREED_MEMORY_H_
