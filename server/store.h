// Durable state of the scheduler in one SQLite database (WAL mode): datasets,
// jobs and their events. Every method commits before it returns, so whatever
// a caller acknowledges survives a crash of the process.
//
// The schema carries a version (PRAGMA user_version); a database written by a
// newer build is refused with a clear error.
//
// Thread-safe: one connection, serialised by an internal mutex.
#ifndef TUNEFORGE_SERVER_STORE_H_
#define TUNEFORGE_SERVER_STORE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "server/records.h"

struct sqlite3;

namespace tuneforge {

struct JobFilter {
  std::string tenant;       // "": every tenant's
  std::optional<JobState> state;
  std::string label_key;    // with label_value: only jobs carrying this label
  std::string label_value;
  int64_t created_after_ms = 0;   // 0: no bound; else create_time_ms >= this
  int64_t created_before_ms = 0;  // 0: no bound; else create_time_ms < this
};

// What a tenant holds on the server.
struct TenantUsage {
  int64_t datasets = 0;
  int64_t stored_bytes = 0;  // its datasets and models (imported and trained)
};

class Store {
 public:
  static constexpr int kSchemaVersion = 4;

  // Opens or creates the database at `path`.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();

  absl::Status PutDataset(const DatasetRecord& d);
  // `tenant` "": any tenant's; else another tenant's is NOT_FOUND by the
  // same query, in the same time, as a missing one (also GetModel, GetJob).
  absl::StatusOr<DatasetRecord> GetDataset(const std::string& id, const std::string& tenant = "");
  // A tenant's datasets ("": everyone's) in creation order after the one
  // with id `after_id` ("" = first).
  absl::StatusOr<std::vector<DatasetRecord>> ListDatasets(const std::string& tenant,
                                                          const std::string& after_id,
                                                          int limit);
  absl::Status DeleteDataset(const std::string& id);
  // How many datasets, model files and job files (artifacts, checkpoints) are this blob.
  absl::StatusOr<int64_t> CountBlobReferences(const std::string& sha256);
  // Held by whoever adds or drops a blob reference (publishes a blob and
  // inserts its row; deletes a row and removes the blob if unreferenced), so
  // a removal never races a reuse of the same bytes.
  Mutex& blob_refs_mu() { return blob_refs_mu_; }
  // True when a queued, running or paused job names the dataset.
  absl::StatusOr<bool> DatasetInUse(const std::string& id);

  // Inserts or replaces a model and its file list in one transaction.
  absl::Status PutModel(const ModelRecord& m);
  absl::StatusOr<ModelRecord> GetModel(const std::string& id, const std::string& tenant = "");
  // A tenant's models ("": everyone's) in creation order after the one with
  // id `after_id` ("" = first).
  absl::StatusOr<std::vector<ModelRecord>> ListModels(const std::string& tenant,
                                                      const std::string& after_id, int limit);
  absl::Status DeleteModel(const std::string& id);
  // True when a queued, running or paused job fine-tunes the model.
  absl::StatusOr<bool> ModelInUse(const std::string& id);

  // Inserts or replaces the job and appends `events` in one transaction.
  absl::Status PutJob(const Job& job, const std::vector<Event>& events = {});
  absl::StatusOr<Job> GetJob(const std::string& id, const std::string& tenant = "");
  absl::StatusOr<std::optional<Job>> FindJobByRequestId(const std::string& tenant,
                                                        const std::string& request_id);
  // Jobs, newest first, starting after `after_id` ("" = newest).
  absl::StatusOr<std::vector<Job>> ListJobs(const JobFilter& filter, const std::string& after_id,
                                            int limit);
  // Every job that is not in a terminal state.
  absl::StatusOr<std::vector<Job>> LoadActiveJobs();

  absl::StatusOr<std::vector<Event>> ListEvents(const std::string& job_id,
                                                int64_t after_sequence, int limit);

  absl::StatusOr<TenantUsage> Usage(const std::string& tenant);
  absl::StatusOr<std::map<JobState, int64_t>> CountJobsByState();

  // SQLite's PRAGMA integrity_check: "ok", or the problems it found.
  absl::StatusOr<std::string> IntegrityCheck();

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `body` between BEGIN IMMEDIATE and COMMIT; rolls back when it (or
  // the commit) fails, and returns that error.
  absl::Status InTransaction(const std::function<absl::Status()>& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a queued, running or paused job meets `condition` (SQL over the
  // jobs table with ?1 bound to `id`).
  absl::StatusOr<bool> ActiveJobWhere(const char* condition, const std::string& id);
  absl::Status Error(const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes job_files hold the job's artifacts and checkpoint files.
  absl::Status PutJobFiles(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<Job>> QueryJobs(const std::string& sql,
                                             const std::vector<std::string>& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Mutex blob_refs_mu_;
  Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_STORE_H_
