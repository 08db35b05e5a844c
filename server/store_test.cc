#include "server/store.h"

#include <filesystem>

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

TEST(StoreTest, RefusesNewerSchema) {
  std::string path = TempDb("schema");
  { ASSERT_TRUE(Store::Open(path).ok()); }
  ASSERT_EQ(std::system(("sqlite3 " + path + " 'PRAGMA user_version=99'").c_str()), 0);
  auto store = Store::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("schema version 99"), std::string::npos);
}

}  // namespace
}  // namespace tuneforge
