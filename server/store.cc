#include "server/store.h"

#include <sqlite3.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tuneforge {
namespace {

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  std::string Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS datasets (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL,
  state INTEGER NOT NULL,
  size_bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  create_time_ms INTEGER NOT NULL,
  report TEXT NOT NULL,
  separator TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS datasets_sha256 ON datasets(sha256);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  request_id TEXT,
  training_dataset TEXT NOT NULL,
  validation_dataset TEXT NOT NULL,
  labels TEXT NOT NULL,
  record TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request_id ON jobs(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  payload TEXT NOT NULL,
  PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
)sql";

// Version 2 added the models tables; CREATE IF NOT EXISTS migrates a
// version 1 database.
constexpr const char* kModelSchema = R"sql(
CREATE TABLE IF NOT EXISTS models (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_files (
  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (model_id, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS model_files_sha256 ON model_files(sha256);
)sql";

// Version 3: the files each job holds on the server (its artifacts and its
// checkpoints), so a blob's references count them too.
constexpr const char* kJobFilesSchema = R"sql(
CREATE TABLE IF NOT EXISTS job_files (
  job_id TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_files_sha256 ON job_files(sha256);
)sql";

// The rows of job_files a job has: artifacts by their path, the checkpoint
// and the one arriving under "checkpoint/" and "pending/" plus their names.
std::vector<std::pair<std::string, std::string>> JobFileRows(const Job& job) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const FileRecord& f : job.artifacts) rows.emplace_back(f.path, f.sha256);
  for (const FileRecord& f : job.checkpoint) {
    rows.emplace_back(absl::StrCat("checkpoint/", job.checkpoint_name, "/", f.path), f.sha256);
  }
  for (const FileRecord& f : job.pending_checkpoint) {
    rows.emplace_back(absl::StrCat("pending/", job.pending_checkpoint_name, "/", f.path), f.sha256);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Version 4: every dataset, model and job belongs to a tenant; a request id
// is unique within its tenant only, so one tenant cannot find another's job
// by guessing its request id.
constexpr const char* kTenantSchema = R"sql(
ALTER TABLE datasets ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE models ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
DROP INDEX IF EXISTS jobs_request_id;
CREATE UNIQUE INDEX jobs_request_id ON jobs(tenant, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX datasets_tenant ON datasets(tenant, seq);
CREATE INDEX models_tenant ON models(tenant, seq);
CREATE INDEX jobs_tenant ON jobs(tenant, seq);
)sql";

constexpr const char* kActiveStates = "(1, 2, 6)";  // QUEUED, RUNNING, PAUSED

DatasetRecord DatasetFromRow(const Stmt& s) {
  DatasetRecord d;
  d.id = s.Text(0);
  d.display_name = s.Text(1);
  d.state = static_cast<DatasetState>(s.Int(2));
  d.size_bytes = s.Int(3);
  d.sha256 = s.Text(4);
  d.create_time_ms = s.Int(5);
  d.report = DatasetReportFromJson(s.Text(6));
  d.separator = s.Text(7);
  d.tenant = s.Text(8);
  return d;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", msg));
  }
  std::unique_ptr<Store> store(new Store(db));
  MutexLock lock(&store->mu_);
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  // FULL: a commit is on disk before it returns, so acknowledged changes
  // survive a power loss, not only a crash of the process.
  RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
  int version = 0;
  {
    Stmt s(db, "PRAGMA user_version");
    if (s.Step() == SQLITE_ROW) version = static_cast<int>(s.Int(0));
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database ", path, " has schema version ", version, " but this build knows only up to ",
        kSchemaVersion, "; run a newer tuneforge-server or restore a backup"));
  }
  RETURN_IF_ERROR(store->Exec("BEGIN IMMEDIATE"));
  absl::Status s = store->Exec(kSchema);
  // Migrations from older versions go here, one step at a time.
  if (s.ok()) s = store->Exec(kModelSchema);  // 1 -> 2
  if (s.ok() && version < 3) {  // 2 -> 3: the files of the jobs stored so far
    s = store->Exec(kJobFilesSchema);
    Stmt jobs(db, "SELECT record FROM jobs");
    while (s.ok() && jobs.Step() == SQLITE_ROW) s = store->PutJobFiles(JobFromJson(jobs.Text(0)));
  }
  if (s.ok() && version < 4) s = store->Exec(kTenantSchema);  // 3 -> 4
  if (s.ok()) s = store->Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str());
  if (!s.ok()) {
    store->Exec("ROLLBACK").IgnoreError();
    return s;
  }
  RETURN_IF_ERROR(store->Exec("COMMIT"));
  return store;
}

Store::~Store() {
  MutexLock lock(&mu_);
  sqlite3_close(db_);
}

namespace {

// Codes by what the caller does next: a full disk is RESOURCE_EXHAUSTED (wait
// for space, or hand the work back), a busy database UNAVAILABLE (retry).
absl::Status SqliteStatus(int code, const std::string& msg) {
  if ((code & 0xff) == SQLITE_FULL) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server's disk is full (", msg, "); retry once space has been freed"));
  }
  if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace

absl::Status Store::Exec(const char* sql) {
  char* err = nullptr;
  if (const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err); rc != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return SqliteStatus(rc, absl::StrCat("sqlite: ", msg, " in: ", sql));
  }
  return absl::OkStatus();
}

absl::Status Store::Error(const char* what) {
  return SqliteStatus(sqlite3_extended_errcode(db_),
                      absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status Store::PutDataset(const DatasetRecord& d) {
  MutexLock lock(&mu_);
  Stmt s(db_,
         "INSERT INTO datasets (id, display_name, state, size_bytes, sha256, create_time_ms, "
         "report, separator, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
         "display_name=excluded.display_name, state=excluded.state, report=excluded.report");
  if (!s.ok()) return Error("prepare");
  s.Bind(1, d.id).Bind(2, d.display_name).Bind(3, static_cast<int64_t>(d.state));
  s.Bind(4, d.size_bytes).Bind(5, d.sha256).Bind(6, d.create_time_ms).Bind(7, ToJson(d.report));
  s.Bind(8, d.separator).Bind(9, d.tenant);
  if (s.Step() != SQLITE_DONE) return Error("insert dataset");
  return absl::OkStatus();
}

absl::StatusOr<DatasetRecord> Store::GetDataset(const std::string& id, const std::string& tenant) {
  MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT id, display_name, state, size_bytes, sha256, create_time_ms, report, separator, "
         "tenant FROM datasets WHERE id = ?1 AND (?2 = '' OR tenant = ?2)");
  s.Bind(1, id).Bind(2, tenant);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("dataset ", id, " not found"));
  if (rc != SQLITE_ROW) return Error("get dataset");
  return DatasetFromRow(s);
}

absl::StatusOr<std::vector<DatasetRecord>> Store::ListDatasets(const std::string& tenant,
                                                               const std::string& after_id,
                                                               int limit) {
  MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT id, display_name, state, size_bytes, sha256, create_time_ms, report, separator, "
         "tenant FROM datasets WHERE seq > COALESCE((SELECT seq FROM datasets WHERE id = ?1), 0) "
         "AND (?3 = '' OR tenant = ?3) ORDER BY seq LIMIT ?2");
  s.Bind(1, after_id).Bind(2, static_cast<int64_t>(limit)).Bind(3, tenant);
  std::vector<DatasetRecord> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(DatasetFromRow(s));
  if (rc != SQLITE_DONE) return Error("list datasets");
  return out;
}

absl::Status Store::DeleteDataset(const std::string& id) {
  MutexLock lock(&mu_);
  Stmt s(db_, "DELETE FROM datasets WHERE id = ?");
  s.Bind(1, id);
  if (s.Step() != SQLITE_DONE) return Error("delete dataset");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Store::CountBlobReferences(const std::string& sha256) {
  MutexLock lock(&mu_);
  Stmt s(db_, "SELECT (SELECT COUNT(*) FROM datasets WHERE sha256 = ?1) + "
              "(SELECT COUNT(*) FROM model_files WHERE sha256 = ?1) + "
              "(SELECT COUNT(*) FROM job_files WHERE sha256 = ?1)");
  s.Bind(1, sha256);
  if (s.Step() != SQLITE_ROW) return Error("count blob references");
  return s.Int(0);
}

absl::StatusOr<bool> Store::ActiveJobWhere(const char* condition, const std::string& id) {
  MutexLock lock(&mu_);
  Stmt s(db_, absl::StrCat("SELECT 1 FROM jobs WHERE state IN ", kActiveStates, " AND (",
                           condition, ") LIMIT 1")
                  .c_str());
  s.Bind(1, id);
  int rc = s.Step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("query jobs");
  return rc == SQLITE_ROW;
}

absl::StatusOr<bool> Store::DatasetInUse(const std::string& id) {
  return ActiveJobWhere("training_dataset = ?1 OR validation_dataset = ?1", id);
}

absl::Status Store::InTransaction(const std::function<absl::Status()>& body) {
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = body();
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) Exec("ROLLBACK").IgnoreError();
  return s;
}

absl::Status Store::PutModel(const ModelRecord& m) {
  MutexLock lock(&mu_);
  return InTransaction([&]() -> absl::Status {
    {
      Stmt s(db_, "INSERT INTO models (id, record, tenant) VALUES (?, ?, ?) "
                  "ON CONFLICT(id) DO UPDATE SET record=excluded.record");
      s.Bind(1, m.id).Bind(2, ToJson(m)).Bind(3, m.tenant);
      if (s.Step() != SQLITE_DONE) return Error("put model");
    }
    {
      Stmt s(db_, "DELETE FROM model_files WHERE model_id = ?");
      s.Bind(1, m.id);
      if (s.Step() != SQLITE_DONE) return Error("replace model files");
    }
    for (const FileRecord& f : m.files) {
      Stmt s(db_, "INSERT INTO model_files (model_id, path, sha256) VALUES (?, ?, ?)");
      s.Bind(1, m.id).Bind(2, f.path).Bind(3, f.sha256);
      if (s.Step() != SQLITE_DONE) return Error("put model file");
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<ModelRecord> Store::GetModel(const std::string& id, const std::string& tenant) {
  MutexLock lock(&mu_);
  Stmt s(db_, "SELECT record FROM models WHERE id = ?1 AND (?2 = '' OR tenant = ?2)");
  s.Bind(1, id).Bind(2, tenant);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("model ", id, " not found"));
  if (rc != SQLITE_ROW) return Error("get model");
  return ModelFromJson(s.Text(0));
}

absl::StatusOr<std::vector<ModelRecord>> Store::ListModels(const std::string& tenant,
                                                           const std::string& after_id,
                                                           int limit) {
  MutexLock lock(&mu_);
  Stmt s(db_, "SELECT record FROM models WHERE seq > COALESCE((SELECT seq FROM models "
              "WHERE id = ?1), 0) AND (?3 = '' OR tenant = ?3) ORDER BY seq LIMIT ?2");
  s.Bind(1, after_id).Bind(2, static_cast<int64_t>(limit)).Bind(3, tenant);
  std::vector<ModelRecord> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ModelFromJson(s.Text(0)));
  if (rc != SQLITE_DONE) return Error("list models");
  return out;
}

absl::Status Store::DeleteModel(const std::string& id) {
  MutexLock lock(&mu_);
  Stmt s(db_, "DELETE FROM models WHERE id = ?");  // model_files cascade
  s.Bind(1, id);
  if (s.Step() != SQLITE_DONE) return Error("delete model");
  return absl::OkStatus();
}

absl::StatusOr<bool> Store::ModelInUse(const std::string& id) {
  return ActiveJobWhere("json_extract(record, '$.spec.base_model') = ?1", id);
}

absl::Status Store::PutJob(const Job& job, const std::vector<Event>& events) {
  MutexLock lock(&mu_);
  return InTransaction([&]() -> absl::Status {
    {
      Stmt s(db_,
             "INSERT INTO jobs (id, state, request_id, training_dataset, validation_dataset, "
             "labels, record, tenant) VALUES (?, ?, NULLIF(?, ''), ?, ?, ?, ?, ?) ON CONFLICT(id) DO "
             "UPDATE SET state=excluded.state, record=excluded.record");
      s.Bind(1, job.id).Bind(2, static_cast<int64_t>(job.state)).Bind(3, job.spec.request_id);
      s.Bind(4, job.spec.training_dataset).Bind(5, job.spec.validation_dataset);
      s.Bind(6, nlohmann::json(job.spec.labels).dump()).Bind(7, ToJson(job)).Bind(8, job.tenant);
      if (s.Step() != SQLITE_DONE) return Error("put job");
    }
    RETURN_IF_ERROR(PutJobFiles(job));
    for (const Event& e : events) {
      Stmt s(db_, "INSERT INTO events (job_id, sequence, time_ms, payload) VALUES (?, ?, ?, ?)");
      s.Bind(1, e.job_id).Bind(2, e.sequence).Bind(3, e.time_ms).Bind(4, PayloadToJson(e));
      if (s.Step() != SQLITE_DONE) return Error("append event");
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<TenantUsage> Store::Usage(const std::string& tenant) {
  MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT (SELECT COUNT(*) FROM datasets WHERE tenant = ?1), "
         "(SELECT COALESCE(SUM(size_bytes), 0) FROM datasets WHERE tenant = ?1), "
         "(SELECT COALESCE(SUM(json_extract(record, '$.size_bytes')), 0) FROM models "
         "WHERE tenant = ?1)");
  s.Bind(1, tenant);
  if (s.Step() != SQLITE_ROW) return Error("tenant usage");
  TenantUsage usage;
  usage.datasets = s.Int(0);
  usage.stored_bytes = s.Int(1) + s.Int(2);
  return usage;
}

absl::StatusOr<std::map<JobState, int64_t>> Store::CountJobsByState() {
  MutexLock lock(&mu_);
  Stmt s(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  std::map<JobState, int64_t> counts;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) counts[static_cast<JobState>(s.Int(0))] = s.Int(1);
  if (rc != SQLITE_DONE) return Error("count jobs");
  return counts;
}

absl::StatusOr<std::string> Store::IntegrityCheck() {
  MutexLock lock(&mu_);
  Stmt s(db_, "PRAGMA integrity_check");
  std::string out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) absl::StrAppend(&out, out.empty() ? "" : "\n", s.Text(0));
  if (rc != SQLITE_DONE) return Error("integrity check");
  return out;
}

absl::Status Store::PutJobFiles(const Job& job) {
  const std::vector<std::pair<std::string, std::string>> rows = JobFileRows(job);
  std::vector<std::pair<std::string, std::string>> stored;
  {
    Stmt s(db_, "SELECT path, sha256 FROM job_files WHERE job_id = ? ORDER BY path");
    s.Bind(1, job.id);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) stored.emplace_back(s.Text(0), s.Text(1));
    if (rc != SQLITE_DONE) return Error("read job files");
  }
  if (stored == rows) return absl::OkStatus();  // most commits: an event, no new file
  {
    Stmt s(db_, "DELETE FROM job_files WHERE job_id = ?");
    s.Bind(1, job.id);
    if (s.Step() != SQLITE_DONE) return Error("clear job files");
  }
  for (const auto& [path, sha] : rows) {
    Stmt s(db_, "INSERT OR REPLACE INTO job_files (job_id, path, sha256) VALUES (?, ?, ?)");
    s.Bind(1, job.id).Bind(2, path).Bind(3, sha);
    if (s.Step() != SQLITE_DONE) return Error("put job file");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Job>> Store::QueryJobs(const std::string& sql,
                                                  const std::vector<std::string>& args) {
  Stmt s(db_, sql.c_str());
  if (!s.ok()) return Error("prepare");
  for (size_t i = 0; i < args.size(); ++i) s.Bind(static_cast<int>(i + 1), args[i]);
  std::vector<Job> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(JobFromJson(s.Text(0)));
  if (rc != SQLITE_DONE) return Error("query jobs");
  return out;
}

absl::StatusOr<Job> Store::GetJob(const std::string& id, const std::string& tenant) {
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::vector<Job> jobs,
                   QueryJobs("SELECT record FROM jobs WHERE id = ?1 AND (?2 = '' OR tenant = ?2)",
                             {id, tenant}));
  if (jobs.empty()) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return std::move(jobs[0]);
}

absl::StatusOr<std::optional<Job>> Store::FindJobByRequestId(const std::string& tenant,
                                                             const std::string& request_id) {
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::vector<Job> jobs,
                   QueryJobs("SELECT record FROM jobs WHERE tenant = ? AND request_id = ?",
                             {tenant, request_id}));
  if (jobs.empty()) return std::optional<Job>();
  return std::optional<Job>(std::move(jobs[0]));
}

absl::StatusOr<std::vector<Job>> Store::ListJobs(const JobFilter& filter,
                                                 const std::string& after_id, int limit) {
  MutexLock lock(&mu_);
  std::string sql =
      "SELECT record FROM jobs WHERE seq < COALESCE((SELECT seq FROM jobs WHERE id = ?1), "
      "9223372036854775807)";
  std::vector<std::string> args = {after_id};
  if (filter.state) {
    absl::StrAppend(&sql, " AND state = ", static_cast<int>(*filter.state));
  }
  if (!filter.tenant.empty()) {
    args.push_back(filter.tenant);
    absl::StrAppend(&sql, " AND tenant = ?", args.size());
  }
  if (!filter.label_key.empty()) {
    args.push_back(absl::StrCat("$.\"", filter.label_key, "\""));
    args.push_back(filter.label_value);
    absl::StrAppend(&sql, " AND json_extract(labels, ?", args.size() - 1, ") = ?", args.size());
  }
  if (filter.created_after_ms > 0) {
    absl::StrAppend(&sql, " AND json_extract(record, '$.create_time_ms') >= ",
                    filter.created_after_ms);
  }
  if (filter.created_before_ms > 0) {
    absl::StrAppend(&sql, " AND json_extract(record, '$.create_time_ms') < ",
                    filter.created_before_ms);
  }
  absl::StrAppend(&sql, " ORDER BY seq DESC LIMIT ", limit);
  return QueryJobs(sql, args);
}

absl::StatusOr<std::vector<Job>> Store::LoadActiveJobs() {
  MutexLock lock(&mu_);
  return QueryJobs(
      absl::StrCat("SELECT record FROM jobs WHERE state IN ", kActiveStates, " ORDER BY seq"),
      {});
}

absl::StatusOr<std::vector<Event>> Store::ListEvents(const std::string& job_id,
                                                     int64_t after_sequence, int limit) {
  MutexLock lock(&mu_);
  Stmt s(db_,
         "SELECT sequence, time_ms, payload FROM events WHERE job_id = ? AND sequence > ? "
         "ORDER BY sequence LIMIT ?");
  s.Bind(1, job_id).Bind(2, after_sequence).Bind(3, static_cast<int64_t>(limit));
  std::vector<Event> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    Event e;
    e.job_id = job_id;
    e.sequence = s.Int(0);
    e.time_ms = s.Int(1);
    PayloadFromJson(s.Text(2), &e);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return Error("list events");
  return out;
}

}  // namespace tuneforge
