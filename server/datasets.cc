#include "server/datasets.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/scheduler.h"

namespace tuneforge {

absl::Status DatasetUpload::Append(std::string_view chunk) {
  if (writer_->size() + static_cast<int64_t>(chunk.size()) > catalog_->max_upload_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "upload exceeds the server's limit of ", catalog_->max_upload_bytes_,
        " bytes; split the dataset or raise --max-upload-bytes"));
  }
  return writer_->Append(chunk);
}

absl::Status DatasetUpload::CheckSize() const {
  if (metadata_.size_bytes > 0 && metadata_.size_bytes != writer_->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata.size_bytes: the client announced ", metadata_.size_bytes,
                     " bytes but sent ", writer_->size(), "; the upload was cut short"));
  }
  if (writer_->size() == 0) return absl::InvalidArgumentError("the upload holds no bytes");
  return absl::OkStatus();
}

absl::StatusOr<DatasetRecord> DatasetUpload::Finish() {
  RETURN_IF_ERROR(CheckSize());
  ASSIGN_OR_RETURN(std::string sha, writer_->Seal(metadata_.sha256));
  ASSIGN_OR_RETURN(std::string bytes, writer_->ReadSealed());
  ParsedDataset parsed = ParseDataset(bytes, metadata_.format);
  DatasetRecord d;
  d.id = NewId();
  d.display_name = metadata_.display_name;
  d.state = parsed.report.error_count > 0 ? DatasetState::kInvalid : DatasetState::kReady;
  d.size_bytes = static_cast<int64_t>(bytes.size());
  d.sha256 = sha;
  d.create_time_ms = NowMs();
  d.report = std::move(parsed.report);
  MutexLock lock(&catalog_->blob_refs_mu_);
  RETURN_IF_ERROR(writer_->Publish());
  RETURN_IF_ERROR(catalog_->store_->PutDataset(d));
  return d;
}

absl::StatusOr<DatasetReport> DatasetUpload::Validate() {
  RETURN_IF_ERROR(CheckSize());
  RETURN_IF_ERROR(writer_->Seal(metadata_.sha256).status());
  ASSIGN_OR_RETURN(std::string bytes, writer_->ReadSealed());
  return ParseDataset(bytes, metadata_.format).report;  // the temp file goes with writer_
}

absl::StatusOr<std::unique_ptr<DatasetUpload>> DatasetCatalog::StartUpload(
    UploadMetadata metadata) {
  if (metadata.size_bytes > max_upload_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("metadata.size_bytes: ", metadata.size_bytes, " bytes exceeds the limit of ",
                     max_upload_bytes_));
  }
  if (!metadata.sha256.empty() && !IsSha256Hex(metadata.sha256)) {
    return absl::InvalidArgumentError("metadata.sha256: must be 64 lowercase hex characters");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, blobs_->NewWriter());
  return std::unique_ptr<DatasetUpload>(
      new DatasetUpload(this, std::move(metadata), std::move(writer)));
}

absl::Status DatasetCatalog::Delete(const std::string& id) {
  ASSIGN_OR_RETURN(DatasetRecord d, store_->GetDataset(id));
  ASSIGN_OR_RETURN(bool in_use, store_->DatasetInUse(id));
  if (in_use) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dataset ", id, " is used by a queued, running or paused job; cancel it first"));
  }
  MutexLock lock(&blob_refs_mu_);
  RETURN_IF_ERROR(store_->DeleteDataset(id));
  ASSIGN_OR_RETURN(int64_t users, store_->CountDatasetsWithBlob(d.sha256));
  if (users == 0) RETURN_IF_ERROR(blobs_->Remove(d.sha256));
  return absl::OkStatus();
}

}  // namespace tuneforge
