#include "server/datasets.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/blob_reclaimer.h"
#include "server/clock.h"
#include "server/ids.h"

namespace tuneforge {

namespace {

std::string PendingKey(const std::string& tenant, const std::string& upload_id) {
  return absl::StrCat(tenant, "/", upload_id);
}

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
                             std::unique_ptr<BlobWriter> writer, Room server, Room tenant)
    : catalog_(catalog),
      metadata_(std::move(metadata)),
      writer_(std::move(writer)),
      server_(std::move(server)),
      tenant_(std::move(tenant)),
      validator_(OptionsOf(metadata_)) {}

DatasetUpload::~DatasetUpload() {
  catalog_->ledger_->Release(metadata_.tenant, 1, writer_->size());
}

absl::Status DatasetUpload::Append(std::string_view chunk) {
  const int64_t n = static_cast<int64_t>(chunk.size());
  if (writer_->size() + n > server_.bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("upload exceeds ", server_.why, "; nothing was stored"));
  }
  RETURN_IF_ERROR(catalog_->ledger_->Hold(metadata_.tenant, n, tenant_));
  if (absl::Status s = writer_->Append(chunk); !s.ok()) {
    catalog_->ledger_->Release(metadata_.tenant, 0, n);
    return s;
  }
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
  d.tenant = metadata_.tenant;
  MutexLock lock(&catalog_->store_->blob_refs_mu());
  // Uploads running side by side each saw the quota with room to spare.
  ASSIGN_OR_RETURN(Room room, catalog_->RoomFor(metadata_.tenant));
  if (d.size_bytes > room.bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("upload exceeds ", room.why));
  }
  RETURN_IF_ERROR(writer_->Publish());
  d.sha256 = writer_->sha256();
  if (absl::Status s = catalog_->store_->PutDataset(d); !s.ok()) {
    (void)RemoveIfUnreferenced(catalog_->store_, catalog_->blobs_, d.sha256);  // no orphan
    return s;
  }
  return d;
}

absl::StatusOr<DatasetReport> DatasetUpload::Validate() {
  return Seal();  // the temp file goes with writer_
}

Room DatasetCatalog::ServerLimit() const {
  return {max_upload_bytes_, absl::StrCat("the server's limit of ", max_upload_bytes_,
                                          " bytes; split the dataset or raise --max-upload-bytes")};
}

absl::StatusOr<Room> DatasetCatalog::RoomFor(const std::string& tenant) {
  return tuneforge::RoomFor(store_, quota_, tenant, /*new_dataset=*/true, ServerLimit());
}

absl::StatusOr<std::unique_ptr<DatasetUpload>> DatasetCatalog::StartUpload(
    UploadMetadata metadata, bool store) {
  if (!metadata.sha256.empty() && !IsSha256Hex(metadata.sha256)) {
    return absl::InvalidArgumentError("metadata.sha256: must be 64 lowercase hex characters");
  }
  // Only an upload that will be stored needs room for one more dataset.
  ASSIGN_OR_RETURN(Room tenant, tuneforge::RoomFor(store_, quota_, metadata.tenant, store,
                                                   Room{INT64_MAX, ""}));
  const Room server = ServerLimit();
  const Room& tighter = Tighter(server, tenant);
  if (metadata.size_bytes > tighter.bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "metadata.size_bytes: ", metadata.size_bytes, " bytes exceeds ", tighter.why));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, blobs_->NewWriter());
  RETURN_IF_ERROR(ledger_->Open(metadata.tenant));
  return std::unique_ptr<DatasetUpload>(new DatasetUpload(
      this, std::move(metadata), std::move(writer), server, std::move(tenant)));
}

void DatasetCatalog::ExpirePendingLocked() {
  const absl::Time cutoff = absl::Now() - absl::Hours(1);
  for (auto it = pending_.begin(); it != pending_.end();) {
    // Only idle ones: an upload with a stream on it has no `upload` here.
    it = (it->second.upload && it->second.touched < cutoff) ? pending_.erase(it) : std::next(it);
  }
}

absl::StatusOr<std::unique_ptr<DatasetUpload>> DatasetCatalog::Resume(
    const std::string& upload_id, UploadMetadata metadata, int64_t offset) {
  MutexLock lock(&pending_mu_);
  ExpirePendingLocked();
  const std::string key = PendingKey(metadata.tenant, upload_id);
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    if (offset != 0) {
      return absl::NotFoundError(absl::StrCat("metadata.offset: no upload '", upload_id,
                                              "' is pending here (it finished, expired, or the "
                                              "server restarted); start again from offset 0"));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<DatasetUpload> upload, StartUpload(metadata));
    pending_[key] = Pending{nullptr, std::move(metadata), 0, absl::Now()};
    return upload;
  }
  Pending& p = it->second;
  if (!p.upload) {
    return absl::AbortedError(absl::StrCat("upload '", upload_id,
                                           "' is being written by another stream"));
  }
  if (!(p.metadata == metadata)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metadata: differs from the pending upload '", upload_id, "'; resume with the same "
        "name, format, size, sha256, separator and max_seq_len, or choose a new upload_id"));
  }
  if (offset != p.size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "metadata.offset: the server holds ", p.size, " bytes of upload '", upload_id,
        "'; resume from exactly there (QueryUpload)"));
  }
  p.touched = absl::Now();
  return std::move(p.upload);
}

void DatasetCatalog::Suspend(const std::string& tenant, const std::string& upload_id,
                             std::unique_ptr<DatasetUpload> upload) {
  MutexLock lock(&pending_mu_);
  auto it = pending_.find(PendingKey(tenant, upload_id));
  if (it == pending_.end()) return;  // the upload is dropped with its temp file
  if (!upload) {  // finished or failed for good
    pending_.erase(it);
    return;
  }
  it->second.size = upload->size();
  it->second.touched = absl::Now();
  it->second.upload = std::move(upload);
}

absl::StatusOr<std::pair<int64_t, int64_t>> DatasetCatalog::Query(const std::string& tenant,
                                                                  const std::string& upload_id) {
  MutexLock lock(&pending_mu_);
  ExpirePendingLocked();
  auto it = pending_.find(PendingKey(tenant, upload_id));
  if (it == pending_.end()) {
    return absl::NotFoundError(absl::StrCat("no upload '", upload_id, "' is pending"));
  }
  // While a stream is writing, this is the size it resumed from.
  return std::make_pair(it->second.size, it->second.metadata.size_bytes);
}

absl::StatusOr<DatasetRecord> DatasetCatalog::Get(const std::string& id, const Scope& scope) {
  return store_->GetDataset(id, scope.ListFilter());
}

absl::Status DatasetCatalog::Delete(const std::string& id, const Scope& scope) {
  ASSIGN_OR_RETURN(DatasetRecord d, Get(id, scope));
  ASSIGN_OR_RETURN(bool in_use, store_->DatasetInUse(id));
  if (in_use) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dataset ", id, " is used by a queued, running or paused job; cancel it first"));
  }
  MutexLock lock(&store_->blob_refs_mu());
  RETURN_IF_ERROR(store_->DeleteDataset(id));
  ASSIGN_OR_RETURN(int64_t users, store_->CountBlobReferences(d.sha256));
  if (users == 0) RETURN_IF_ERROR(blobs_->Remove(d.sha256));
  return absl::OkStatus();
}

}  // namespace tuneforge
