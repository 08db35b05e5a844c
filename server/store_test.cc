#include "server/store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

std::string TempDb(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/store-" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir + "/tuneforge.db";
}

Job MakeJob(const std::string& id, JobState state, const std::string& dataset = "d1") {
  Job j;
  j.id = id;
  j.state = state;
  j.spec.training_dataset = dataset;
  j.spec.base_model = "tiny-gpt2";
  j.spec.labels["team"] = id == "a" ? "hr" : "legal";
  j.create_time_ms = 1000;
  return j;
}

TEST(StoreTest, JobsAndEventsSurviveReopen) {
  std::string path = TempDb("reopen");
  {
    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    Job j = MakeJob("a", JobState::kQueued);
    j.last_sequence = 2;
    Event e1{"a", 1, 5, StateChangeEvent{JobState::kUnspecified, JobState::kQueued, "created"}};
    Event e2{"a", 2, 6, MetricsEvent{1, 3, 9, 2.5, 1e-3, 0.7, 1000, 300, 0.3, 12}};
    ASSERT_TRUE((*store)->PutJob(j, {e1, e2}).ok());
  }
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok());
  auto job = (*store)->GetJob("a");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->spec.labels.at("team"), "hr");
  EXPECT_EQ(job->last_sequence, 2);
  auto events = (*store)->ListEvents("a", 0, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(std::get<MetricsEvent>((*events)[1].payload).loss, 2.5);
  EXPECT_EQ(std::get<StateChangeEvent>((*events)[0].payload).reason, "created");
  EXPECT_EQ((*store)->ListEvents("a", 1, 10)->size(), 1u);
}

TEST(StoreTest, DuplicateEventSequenceRollsBackTheJobToo) {
  auto store = Store::Open(TempDb("rollback"));
  Job j = MakeJob("a", JobState::kQueued);
  Event e{"a", 1, 5, LogEvent{"info", "x"}};
  ASSERT_TRUE((*store)->PutJob(j, {e}).ok());
  j.state = JobState::kRunning;
  EXPECT_FALSE((*store)->PutJob(j, {e}).ok());  // sequence 1 again
  EXPECT_EQ((*store)->GetJob("a")->state, JobState::kQueued);
}

TEST(StoreTest, ListFiltersAndPages) {
  auto store = Store::Open(TempDb("list"));
  ASSERT_TRUE((*store)->PutJob(MakeJob("a", JobState::kSucceeded)).ok());
  ASSERT_TRUE((*store)->PutJob(MakeJob("b", JobState::kQueued)).ok());
  ASSERT_TRUE((*store)->PutJob(MakeJob("c", JobState::kQueued)).ok());
  auto all = (*store)->ListJobs({}, "", 10);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, "c");  // newest first
  auto page2 = (*store)->ListJobs({}, "c", 1);
  ASSERT_EQ(page2->size(), 1u);
  EXPECT_EQ((*page2)[0].id, "b");
  JobFilter queued;
  queued.state = JobState::kQueued;
  EXPECT_EQ((*store)->ListJobs(queued, "", 10)->size(), 2u);
  JobFilter hr;
  hr.label_key = "team";
  hr.label_value = "hr";
  auto labelled = (*store)->ListJobs(hr, "", 10);
  ASSERT_EQ(labelled->size(), 1u);
  EXPECT_EQ((*labelled)[0].id, "a");
  EXPECT_EQ((*store)->LoadActiveJobs()->size(), 2u);
  EXPECT_TRUE(*(*store)->DatasetInUse("d1"));
  EXPECT_FALSE(*(*store)->DatasetInUse("d2"));
  EXPECT_EQ((*store)->GetJob("zzz").status().code(), absl::StatusCode::kNotFound);
}

TEST(StoreTest, ModelsAndTheirBlobReferences) {
  auto store = Store::Open(TempDb("models"));
  ASSERT_TRUE(store.ok());
  ModelRecord m;
  m.id = "m1";
  m.model_type = "llama";
  m.files = {{"config.json", "c1", 10}, {"model.safetensors", "w1", 100}};
  ASSERT_TRUE((*store)->PutModel(m).ok());
  ModelRecord n = m;
  n.id = "m2";
  n.files = {{"config.json", "c2", 10}, {"model.safetensors", "w1", 100}};
  ASSERT_TRUE((*store)->PutModel(n).ok());
  EXPECT_EQ(*(*store)->CountBlobReferences("w1"), 2);
  EXPECT_EQ(*(*store)->CountBlobReferences("c1"), 1);
  auto got = (*store)->GetModel("m1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->files.size(), 2u);
  EXPECT_EQ(got->model_type, "llama");
  // A queued job on m1 keeps it in use; a finished one does not.
  Job j = MakeJob("a", JobState::kQueued);
  j.spec.base_model = "m1";
  ASSERT_TRUE((*store)->PutJob(j).ok());
  EXPECT_TRUE(*(*store)->ModelInUse("m1"));
  EXPECT_FALSE(*(*store)->ModelInUse("m2"));
  j.state = JobState::kSucceeded;
  ASSERT_TRUE((*store)->PutJob(j).ok());
  EXPECT_FALSE(*(*store)->ModelInUse("m1"));
  ASSERT_TRUE((*store)->DeleteModel("m1").ok());
  EXPECT_EQ(*(*store)->CountBlobReferences("w1"), 1);  // the file rows went with it
  EXPECT_EQ(*(*store)->CountBlobReferences("c1"), 0);
  auto listed = (*store)->ListModels("", "", 10);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, "m2");
}

// A database from before the models tables (schema 1) opens, keeps its
// datasets and gains the tables.
TEST(StoreTest, MigratesSchemaOne) {
  std::string path = TempDb("migrate");
  {
    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok());
    DatasetRecord d;
    d.id = "d1";
    d.sha256 = "abc";
    ASSERT_TRUE((*store)->PutDataset(d).ok());
  }
  // Back to schema 1: no models tables, no tenants.
  ASSERT_EQ(std::system(("sqlite3 " + path +
                         " 'DROP TABLE model_files; DROP TABLE models; DROP TABLE job_files; "
                         "DROP INDEX datasets_tenant; DROP INDEX jobs_tenant; "
                         "DROP INDEX jobs_request_id; ALTER TABLE datasets DROP COLUMN tenant; "
                         "ALTER TABLE jobs DROP COLUMN tenant; CREATE UNIQUE INDEX "
                         "jobs_request_id ON jobs(request_id) WHERE request_id IS NOT NULL; "
                         "PRAGMA user_version=1'")
                            .c_str()),
            0);
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->GetDataset("d1")->tenant, kDefaultTenant);  // stored before tenants
  ModelRecord m;
  m.id = "m1";
  EXPECT_TRUE((*store)->PutModel(m).ok());
}

TEST(StoreTest, RefusesNewerSchema) {
  std::string path = TempDb("schema");
  { ASSERT_TRUE(Store::Open(path).ok()); }
  ASSERT_EQ(std::system(("sqlite3 " + path + " 'PRAGMA user_version=99'").c_str()), 0);
  auto store = Store::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("schema version 99"), std::string::npos);
}


TEST(StoreTest, ListFiltersByCreationTime) {
  auto store = Store::Open(TempDb("created"));
  ASSERT_TRUE(store.ok());
  for (int i = 0; i < 5; ++i) {
    Job j = MakeJob("j" + std::to_string(i), JobState::kQueued);
    j.create_time_ms = 1000 * (i + 1);
    ASSERT_TRUE((*store)->PutJob(j).ok());
  }
  JobFilter filter;
  filter.created_after_ms = 2000;
  filter.created_before_ms = 4000;
  std::vector<Job> jobs = *(*store)->ListJobs(filter, "", 100);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].id, "j2");  // newest first
  EXPECT_EQ(jobs[1].id, "j1");
}

// A child process commits a job change and an event per transaction, as fast
// as it can, and acknowledges each commit on a pipe; it is killed with
// SIGKILL at a random moment, many times over. After every kill the
// database passes SQLite's integrity check and holds every acknowledged
// commit (and the job record agrees with its events).
TEST(StoreCrashTest, KilledMidCommitLosesNothingAcknowledged) {
  const std::string path = TempDb("crash");
  std::mt19937 rng(7);
  int64_t acknowledged = 0;
  for (int round = 0; round < 25; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // the child: commit until killed
      close(fds[0]);
      auto store = Store::Open(path);
      if (!store.ok()) _exit(2);
      absl::StatusOr<Job> job = (*store)->GetJob("crash");
      Job j = job.ok() ? *job : MakeJob("crash", JobState::kRunning);
      while (true) {
        Event e{"crash", j.last_sequence + 1, j.last_sequence, LogEvent{"info", std::string(200, 'x')}};
        j.last_sequence += 1;
        j.progress.step = j.last_sequence;
        if (!(*store)->PutJob(j, {e}).ok()) _exit(3);
        const int64_t seq = j.last_sequence;
        if (write(fds[1], &seq, sizeof(seq)) != sizeof(seq)) _exit(4);
      }
    }
    close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 60));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child ended by itself: " << status;
    for (int64_t seq; read(fds[0], &seq, sizeof(seq)) == sizeof(seq);) acknowledged = seq;
    close(fds[0]);

    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ(*(*store)->IntegrityCheck(), "ok") << "round " << round;
    absl::StatusOr<Job> job = (*store)->GetJob("crash");
    if (acknowledged == 0 && !job.ok()) continue;  // killed before the first commit
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_GE(job->last_sequence, acknowledged) << "round " << round;
    EXPECT_EQ(job->progress.step, job->last_sequence);
    std::vector<Event> events = *(*store)->ListEvents("crash", 0, 1 << 20);
    ASSERT_EQ(static_cast<int64_t>(events.size()), job->last_sequence) << "round " << round;
    for (size_t i = 0; i < events.size(); ++i) {
      ASSERT_EQ(events[i].sequence, static_cast<int64_t>(i + 1));
    }
  }
  EXPECT_GT(acknowledged, 25);  // the children did commit between kills
}

}  // namespace
}  // namespace tuneforge
