#include "server/artifacts.h"

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/blob_reclaimer.h"

namespace tuneforge {

absl::Status JobArtifacts::CheckReadable(const std::string& job_id, const std::string& lease,
                                         const std::string& sha256) {
  ASSIGN_OR_RETURN(Job job, scheduler_->LeasedJob(job_id, lease));
  const absl::Status missing = absl::NotFoundError(absl::StrCat("blob ", sha256, " not found"));
  auto listed = [&](const std::vector<FileRecord>& files) {
    for (const FileRecord& f : files) {
      if (f.sha256 == sha256) return true;
    }
    return false;
  };
  if (listed(job.checkpoint) || listed(job.pending_checkpoint) || listed(job.artifacts)) {
    return absl::OkStatus();
  }
  for (const std::string& dataset : {job.spec.training_dataset, job.spec.validation_dataset}) {
    if (dataset.empty()) continue;
    absl::StatusOr<DatasetRecord> d = store_->GetDataset(dataset);
    if (d.ok() && d->sha256 == sha256) return absl::OkStatus();
  }
  absl::StatusOr<ModelRecord> base = store_->GetModel(job.spec.base_model);  // none for a preset
  if (base.ok() && listed(base->files)) return absl::OkStatus();
  return missing;
}

absl::StatusOr<bool> JobArtifacts::RecordHeld(const std::string& job_id, const std::string& lease,
                                              const FileRecord& file) {
  if (!IsSha256Hex(file.sha256) || file.size_bytes < 0) return false;
  // Only bytes this job could have read may stand in for an upload: a digest
  // alone must not put another tenant's data into this job's output.
  if (!CheckReadable(job_id, lease, file.sha256).ok()) return false;
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
