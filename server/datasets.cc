#include "server/datasets.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/scheduler.h"

namespace tuneforge {

namespace {

ValidatorOptions OptionsOf(const UploadMetadata& m) {
  ValidatorOptions o;
  o.declared = m.format;
  o.separator = m.separator;
  o.max_seq_len = m.max_seq_len;
  o.keep_examples = false;  // the report is all an upload needs
  return o;
}

}  // namespace

DatasetUpload::DatasetUpload(DatasetCatalog* catalog, UploadMetadata metadata,
                             std::unique_ptr<BlobWriter> writer)
    : catalog_(catalog),
      metadata_(std::move(metadata)),
      writer_(std::move(writer)),
      validator_(OptionsOf(metadata_)) {}

absl::Status DatasetUpload::Append(std::string_view chunk) {
  if (writer_->size() + static_cast<int64_t>(chunk.size()) > catalog_->max_upload_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "upload exceeds the server's limit of ", catalog_->max_upload_bytes_,
        " bytes; split the dataset or raise --max-upload-bytes"));
  }
  RETURN_IF_ERROR(writer_->Append(chunk));
  validator_.Feed(chunk);
  return absl::OkStatus();
}

absl::StatusOr<DatasetReport> DatasetUpload::Seal() {
  if (metadata_.size_bytes > 0 && metadata_.size_bytes != writer_->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata.size_bytes: the client announced ", metadata_.size_bytes,
                     " bytes but sent ", writer_->size(), "; the upload was cut short"));
  }
  if (writer_->size() == 0) return absl::InvalidArgumentError("the upload holds no bytes");
  RETURN_IF_ERROR(writer_->Seal(metadata_.sha256).status());
  return validator_.Finish().report;
}

absl::StatusOr<DatasetRecord> DatasetUpload::Finish() {
  ASSIGN_OR_RETURN(DatasetReport report, Seal());
  DatasetRecord d;
  d.id = NewId();
  d.display_name = metadata_.display_name;
  d.state = report.error_count > 0 ? DatasetState::kInvalid : DatasetState::kReady;
  d.size_bytes = writer_->size();
  d.create_time_ms = NowMs();
  d.report = std::move(report);
  d.separator = metadata_.separator;
  MutexLock lock(&catalog_->blob_refs_mu_);
  RETURN_IF_ERROR(writer_->Publish());
  d.sha256 = writer_->sha256();
  RETURN_IF_ERROR(catalog_->store_->PutDataset(d));
  return d;
}

absl::StatusOr<DatasetReport> DatasetUpload::Validate() {
  return Seal();  // the temp file goes with writer_
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
