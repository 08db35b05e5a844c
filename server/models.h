// Models that jobs fine-tune, with no RPC types: the built-in presets,
// Hugging Face folders imported by users, and the models jobs produce.
//
// An import streams each file into the blob store (content-addressed, so a
// re-import of the same weights stores nothing new), then checks the folder
// as a whole (server/model_check.h) before anything becomes visible. A
// broken or oversized import leaves nothing behind.
//
//   ASSIGN_OR_RETURN(auto import, catalog.StartImport("Llama 3.2 1B"));
//   RETURN_IF_ERROR(import->BeginFile("config.json", size, sha256));
//   RETURN_IF_ERROR(import->Append(chunk));   // as chunks arrive
//   ASSIGN_OR_RETURN(ModelRecord m, import->Finish());
//
// Thread-safe: ModelCatalog may be used from any thread; each ModelImport
// belongs to one stream.
#ifndef TUNEFORGE_SERVER_MODELS_H_
#define TUNEFORGE_SERVER_MODELS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/blob_store.h"
#include "common/model_config.h"
#include "server/records.h"
#include "server/store.h"
#include "server/tenancy.h"

namespace tuneforge {

// The record a preset is listed with (it has no files: workers make it).
ModelRecord PresetRecord(const Preset& preset);

class ModelCatalog;

class ModelImport {
 public:
  static constexpr int kMaxFiles = 128;
  ~ModelImport();

  // Ends the previous file (checking its size and digest) and starts the
  // next. INVALID_ARGUMENT for a name that is not a model file, a repeat, or
  // too many files.
  absl::Status BeginFile(const std::string& path, int64_t size_bytes, const std::string& sha256);
  // RESOURCE_EXHAUSTED once the import passes the size limit.
  absl::Status Append(std::string_view chunk);
  // Ends the last file, checks the folder, publishes the blobs and stores
  // the model.
  absl::StatusOr<ModelRecord> Finish();

 private:
  friend class ModelCatalog;
  // Counted among the tenant's uploads in progress until destroyed.
  ModelImport(ModelCatalog* catalog, ModelRecord record, Room room, Room tenant)
      : catalog_(catalog), record_(std::move(record)), room_(std::move(room)),
        tenant_(std::move(tenant)) {}
  absl::Status EndFile();

  struct File {
    FileRecord record;  // the declared size and digest until EndFile()
    std::unique_ptr<BlobWriter> writer;
  };
  ModelCatalog* catalog_;
  ModelRecord record_;
  const Room room_;  // the bytes it may hold, and what sets that limit
  // Bytes all of the tenant's uploads in progress may hold together: what
  // its storage quota leaves (INT64_MAX: no quota).
  const Room tenant_;
  std::vector<File> files_;
  int64_t total_bytes_ = 0;
};

class ModelCatalog {
 public:
  // `quota`: each tenant's storage quota (unset: none); `ledger`: the
  // uploads in progress, shared with the dataset catalogue (null: its own).
  ModelCatalog(Store* store, BlobStore* blobs, int64_t max_model_bytes, QuotaFn quota = {},
               std::shared_ptr<UploadLedger> ledger = nullptr)
      : store_(store), blobs_(blobs), max_model_bytes_(max_model_bytes), quota_(std::move(quota)),
        ledger_(ledger ? std::move(ledger) : std::make_shared<UploadLedger>(quota_)) {}

  // The model will belong to `tenant`; RESOURCE_EXHAUSTED when its storage
  // quota is used up (and later, once the files pass what it leaves).
  absl::StatusOr<std::unique_ptr<ModelImport>> StartImport(const std::string& display_name,
                                                           const std::string& tenant = kDefaultTenant);
  // A preset or a stored model the scope sees; NOT_FOUND otherwise.
  absl::StatusOr<ModelRecord> Get(const std::string& id, const Scope& scope = {});
  // Presets first, then the scope's stored models in creation order, after `after_id`.
  absl::StatusOr<std::vector<ModelRecord>> List(const Scope& scope, const std::string& after_id,
                                                int limit);
  // FAILED_PRECONDITION for a preset or a model an active job fine-tunes;
  // removes the blobs nothing else uses.
  absl::Status Delete(const std::string& id, const Scope& scope = {});
  // The model a job produced, from its "model/" artifacts: checked like an
  // import and stored as "ft-{job id}". Storing it again replaces it.
  absl::StatusOr<ModelRecord> CreateFromJob(const Job& job);

 private:
  friend class ModelImport;
  Room ServerLimit() const;
  absl::StatusOr<Room> RoomFor(const std::string& tenant);
  // Checks the sealed files, publishes them and stores `record` with them.
  absl::StatusOr<ModelRecord> Register(ModelRecord record, const std::vector<FileRecord>& files,
                                       const std::map<std::string, std::string>& paths,
                                       std::vector<std::unique_ptr<BlobWriter>> writers);

  Store* const store_;
  BlobStore* const blobs_;
  const int64_t max_model_bytes_;
  const QuotaFn quota_;
  const std::shared_ptr<UploadLedger> ledger_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_MODELS_H_
