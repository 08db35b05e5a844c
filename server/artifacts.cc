#include "server/artifacts.h"

#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/blob_reclaimer.h"

namespace tuneforge {

absl::StatusOr<bool> JobArtifacts::RecordHeld(const std::string& job_id, const std::string& lease,
                                              const FileRecord& file) {
  if (!IsSha256Hex(file.sha256) || file.size_bytes < 0) return false;
  MutexLock refs(&store_->blob_refs_mu());
  absl::StatusOr<int64_t> size = blobs_->SizeOf(file.sha256);
  if (!size.ok() || *size != file.size_bytes) return false;
  RETURN_IF_ERROR(scheduler_->AddArtifact(job_id, lease, file));
  return true;
}

absl::Status JobArtifacts::Publish(const std::string& job_id, const std::string& lease,
                                   const std::string& path, BlobWriter& writer,
                                   const std::string& expected_sha256) {
  MutexLock refs(&store_->blob_refs_mu());
  ASSIGN_OR_RETURN(std::string sha, writer.Commit(expected_sha256));
  absl::Status s = scheduler_->AddArtifact(job_id, lease, FileRecord{path, sha, writer.size()});
  if (!s.ok()) (void)RemoveIfUnreferenced(store_, blobs_, sha);  // no orphan on a full disk
  return s;
}

}  // namespace tuneforge
