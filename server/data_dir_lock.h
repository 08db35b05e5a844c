// An exclusive lock on a data directory, so that two schedulers never serve
// one database and blob store (the second one's writes would collide with
// the first one's, and its workers would be handed the same jobs).
//
// The lock is a `flock` on `{dir}/LOCK`, which holds the owner's pid for the
// error message. The kernel drops it when the process ends, however it ends
// (SIGKILL included): a stale LOCK file never blocks a restart. The file
// descriptor is close-on-exec, so worker processes the server starts do not
// inherit the lock.
//
//   ASSIGN_OR_RETURN(DataDirLock lock, DataDirLock::Acquire(data_dir));
//
// Thread-compatible; hold one for the life of the process.
#ifndef TUNEFORGE_SERVER_DATA_DIR_LOCK_H_
#define TUNEFORGE_SERVER_DATA_DIR_LOCK_H_

#include <string>

#include "absl/status/statusor.h"

namespace tuneforge {

class DataDirLock {
 public:
  // FAILED_PRECONDITION naming the holder's pid when another process holds it.
  static absl::StatusOr<DataDirLock> Acquire(const std::string& dir);
  DataDirLock(DataDirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DataDirLock& operator=(DataDirLock&&) = delete;
  ~DataDirLock();

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_DATA_DIR_LOCK_H_
