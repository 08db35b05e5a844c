// The files a job's worker uploads (its model, adapter, metrics, manifest,
// TensorBoard events and checkpoints), stored as blobs and recorded on the
// job: the core of WorkerService.UploadArtifact, with no gRPC.
//
// A blob is published and recorded under Store::blob_refs_mu(), so a removal
// of the same bytes (another job's superseded checkpoint) cannot fall in
// between; recording a checkpoint may supersede an older one, whose blobs
// the scheduler hands to the BlobReclaimer, which removes them later on a
// thread of its own (never under this lock).
//
//   JobArtifacts artifacts(scheduler, store, blobs);
//   ASSIGN_OR_RETURN(bool held, artifacts.RecordHeld(job, lease, file));
//   if (!held) RETURN_IF_ERROR(artifacts.Publish(job, lease, path, *writer, sha256));
//
// Thread-safe.
#ifndef TUNEFORGE_SERVER_ARTIFACTS_H_
#define TUNEFORGE_SERVER_ARTIFACTS_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/blob_store.h"
#include "server/records.h"
#include "server/scheduler.h"
#include "server/store.h"

namespace tuneforge {

class JobArtifacts {
 public:
  JobArtifacts(Scheduler* scheduler, Store* store, BlobStore* blobs)
      : scheduler_(scheduler), store_(store), blobs_(blobs) {}

  // OK when the job, under `lease`, may read the blob: its datasets, its
  // base model's files, its checkpoints and its own uploads. NOT_FOUND
  // otherwise, worded as for a blob that does not exist, so a worker token
  // can neither read another tenant's bytes nor learn that they exist.
  absl::Status CheckReadable(const std::string& job_id, const std::string& lease,
                             const std::string& sha256);
  // Records `file` (its path, digest and size) with bytes the server holds
  // already (a tokenizer unchanged since the last checkpoint) and the job
  // may read: true when it did, false when the bytes must be sent.
  absl::StatusOr<bool> RecordHeld(const std::string& job_id, const std::string& lease,
                                  const FileRecord& file);
  // Seals and publishes what `writer` received (checked against
  // `expected_sha256` unless empty) and records it as the job's `path`. A
  // blob published whose record fails (a full disk) is removed again.
  absl::Status Publish(const std::string& job_id, const std::string& lease,
                       const std::string& path, BlobWriter& writer,
                       const std::string& expected_sha256);

 private:
  Scheduler* const scheduler_;
  Store* const store_;
  BlobStore* const blobs_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_ARTIFACTS_H_
