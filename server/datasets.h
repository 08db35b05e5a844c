// Dataset ingestion and the dataset catalogue, with no RPC types.
//
// An upload streams into the blob store (content-addressed, so identical
// bytes are stored once), is parsed and validated, and becomes a dataset row
// that is READY or INVALID with its report. A broken or oversized stream
// leaves nothing behind.
//
//   auto upload = catalog.StartUpload({"hr.json", DatasetFormat::kUnspecified});
//   RETURN_IF_ERROR((*upload)->Append(chunk));   // as chunks arrive
//   ASSIGN_OR_RETURN(DatasetRecord d, (*upload)->Finish());
//
// Thread-safe: DatasetCatalog may be used from any thread; each DatasetUpload
// belongs to one stream.
#ifndef TUNEFORGE_SERVER_DATASETS_H_
#define TUNEFORGE_SERVER_DATASETS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/blob_store.h"
#include "common/dataset_validator.h"
#include "common/mutex.h"
#include "server/records.h"
#include "server/store.h"
#include "server/tenancy.h"

namespace tuneforge {

struct UploadMetadata {
  std::string display_name;  // e.g. "hr.json"
  DatasetFormat format = DatasetFormat::kUnspecified;  // kText also takes plain text
  int64_t size_bytes = 0;  // 0: unknown; else checked at the end
  std::string sha256;      // "": unknown; else checked at the end
  std::string separator;   // plain text: document separator; "": one document
  int64_t max_seq_len = 0; // report examples longer than this; 0: don't
  std::string tenant = kDefaultTenant;  // who uploads: the dataset's owner

  bool operator==(const UploadMetadata& o) const {
    return tenant == o.tenant && display_name == o.display_name && format == o.format && size_bytes == o.size_bytes &&
           sha256 == o.sha256 && separator == o.separator && max_seq_len == o.max_seq_len;
  }
};

class DatasetCatalog;

class DatasetUpload {
 public:
  ~DatasetUpload();
  // RESOURCE_EXHAUSTED once the stream passes the server's size limit, or
  // the tenant's storage quota with all of its uploads in progress
  // counted; the caller then drops the upload.
  absl::Status Append(std::string_view chunk);
  int64_t size() const { return writer_->size(); }
  // Checks size and digest, stores the blob and the dataset row.
  absl::StatusOr<DatasetRecord> Finish();
  // Validates without storing anything (a dry run).
  absl::StatusOr<DatasetReport> Validate();

 private:
  friend class DatasetCatalog;
  // Counted among the tenant's uploads in progress until destroyed.
  DatasetUpload(DatasetCatalog* catalog, UploadMetadata metadata,
                std::unique_ptr<BlobWriter> writer, Room server, Room tenant);
  // Checks size and digest and finishes validation.
  absl::StatusOr<DatasetReport> Seal();

  DatasetCatalog* catalog_;
  UploadMetadata metadata_;
  std::unique_ptr<BlobWriter> writer_;
  const Room server_;  // bytes this upload may hold: the server's limit
  // Bytes all of the tenant's uploads in progress may hold together: what
  // its storage quota leaves (INT64_MAX: no quota).
  const Room tenant_;
  DatasetValidator validator_;  // fed as the bytes arrive
};

class DatasetCatalog {
 public:
  // `quota`: each tenant's limits on datasets and stored bytes (unset: none);
  // `ledger`: the uploads in progress, shared with the model catalogue
  // (null: one of its own).
  DatasetCatalog(Store* store, BlobStore* blobs, int64_t max_upload_bytes, QuotaFn quota = {},
                 std::shared_ptr<UploadLedger> ledger = nullptr)
      : store_(store), blobs_(blobs), max_upload_bytes_(max_upload_bytes),
        quota_(std::move(quota)),
        ledger_(ledger ? std::move(ledger) : std::make_shared<UploadLedger>(quota_)) {}

  // A dry run (`store` false) keeps nothing, but while it streams its bytes
  // count against the storage quota as a stored upload's do.
  // RESOURCE_EXHAUSTED when the tenant holds its quota of datasets or bytes,
  // or has its quota of uploads in progress (streams open and resumable
  // uploads awaiting a resume).
  absl::StatusOr<std::unique_ptr<DatasetUpload>> StartUpload(UploadMetadata metadata,
                                                             bool store = true);

  // Resumable uploads, named by a client-chosen id. Resume() hands back the
  // pending upload when `metadata` matches and `offset` is its size (a new
  // one when none is pending and offset is 0); Suspend() keeps a broken
  // upload for a later Resume(); Query() says how much it holds.
  // Upload ids are per tenant: one tenant never sees another's.
  absl::StatusOr<std::unique_ptr<DatasetUpload>> Resume(const std::string& upload_id,
                                                        UploadMetadata metadata, int64_t offset);
  void Suspend(const std::string& tenant, const std::string& upload_id,
               std::unique_ptr<DatasetUpload> upload);
  absl::StatusOr<std::pair<int64_t, int64_t>> Query(const std::string& tenant,
                                                    const std::string& upload_id);
  // NOT_FOUND for a dataset the scope does not see, as for a missing one.
  absl::StatusOr<DatasetRecord> Get(const std::string& id, const Scope& scope);
  absl::StatusOr<std::vector<DatasetRecord>> List(const Scope& scope, const std::string& after_id,
                                                  int limit) {
    return store_->ListDatasets(scope.ListFilter(), after_id, limit);
  }
  // FAILED_PRECONDITION while an active job uses it; removes the blob when no
  // other dataset shares it.
  absl::Status Delete(const std::string& id, const Scope& scope);
  int64_t max_upload_bytes() const { return max_upload_bytes_; }

 private:
  friend class DatasetUpload;
  Store* const store_;
  BlobStore* const blobs_;
  const int64_t max_upload_bytes_;
  const QuotaFn quota_;
  // Before pending_, which holds uploads that give their share back to it
  // when destroyed.
  const std::shared_ptr<UploadLedger> ledger_;

  struct Pending {
    std::unique_ptr<DatasetUpload> upload;  // null while a stream is writing to it
    UploadMetadata metadata;
    int64_t size = 0;
    absl::Time touched;
  };
  void ExpirePendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pending_mu_);
  Room ServerLimit() const;
  absl::StatusOr<Room> RoomFor(const std::string& tenant);
  Mutex pending_mu_;
  std::map<std::string, Pending> pending_ ABSL_GUARDED_BY(pending_mu_);
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_DATASETS_H_
