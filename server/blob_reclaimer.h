// Removes blobs that nothing references any more (superseded checkpoints,
// the checkpoints of ended jobs), on a thread of its own.
//
// Release() only queues the digests and returns: it takes no lock but the
// reclaimer's own queue lock, so it may be called from anywhere, with any
// other lock held. The reclaimer thread then takes Store::blob_refs_mu(),
// counts each digest's references and removes the unreferenced ones. A
// removal can therefore never re-enter a lock its caller holds (an upload
// that publishes a blob under blob_refs_mu() and, in the same critical
// section, records a file that supersedes an older checkpoint).
//
//   BlobReclaimer reclaimer(store, blobs);
//   options.release_blobs = [&](const auto& d) { reclaimer.Release(d); };
//
// The server's lock order, outermost first (a thread holding one may take
// only those after it):
//   Store::blob_refs_mu()  >  Scheduler::mu_  >  Scheduler::events_mu_
//     >  Store's connection mutex;  BlobReclaimer::mu_ is a leaf.
//
// Thread-safe.
#ifndef TUNEFORGE_SERVER_BLOB_RECLAIMER_H_
#define TUNEFORGE_SERVER_BLOB_RECLAIMER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/blob_store.h"
#include "server/store.h"

namespace tuneforge {

class BlobReclaimer {
 public:
  // `store` and `blobs` must outlive the reclaimer.
  BlobReclaimer(Store* store, BlobStore* blobs);
  // Removes what is still queued, then stops the thread.
  ~BlobReclaimer();
  BlobReclaimer(const BlobReclaimer&) = delete;
  BlobReclaimer& operator=(const BlobReclaimer&) = delete;

  // Queues `digests` for removal once nothing references them. Never blocks
  // on anything but the queue lock.
  void Release(std::vector<std::string> digests);
  // Waits until every digest queued before the call has been handled.
  void Flush();
  // Blobs removed so far (for tests and metrics).
  int64_t removed() const;

 private:
  void Loop();
  void Reclaim(const std::string& sha256);

  Store* const store_;
  BlobStore* const blobs_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;  // guarded by mu_
  uint64_t queued_ = 0;            // digests ever queued, guarded by mu_
  uint64_t handled_ = 0;           // digests ever handled, guarded by mu_
  int64_t removed_ = 0;            // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  std::thread thread_;
};

// Removes the blob unless a dataset, model or job file references it; true
// when it was removed. The caller holds store->blob_refs_mu(). Also the undo
// of a publish whose record could not be written (a full disk), so that no
// blob is left orphaned.
absl::StatusOr<bool> RemoveIfUnreferenced(Store* store, BlobStore* blobs, const std::string& sha256)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(store->blob_refs_mu());

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_BLOB_RECLAIMER_H_
