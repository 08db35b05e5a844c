// A mutex that both Clang's thread-safety analysis (ABSL_GUARDED_BY) and
// ThreadSanitizer understand.
//
// absl::Mutex would do, but Debian's Abseil is a prebuilt library without
// TSan instrumentation: TSan cannot see its locking and reports every access
// it guards as a race. This wrapper over std::mutex (pthreads, which TSan
// intercepts) keeps the annotations and makes the TSan build meaningful.
//
//   Mutex mu_;
//   int count_ ABSL_GUARDED_BY(mu_);
//   void Add() { MutexLock lock(&mu_); ++count_; }
//
// Thread-safe, like std::mutex.
#ifndef TUNEFORGE_COMMON_MUTEX_H_
#define TUNEFORGE_COMMON_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace tuneforge {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_MUTEX_H_
