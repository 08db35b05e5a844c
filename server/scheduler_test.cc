#include "server/scheduler.h"

#include <filesystem>
#include <future>

#include <gtest/gtest.h>



namespace tuneforge {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/scheduler-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    store_ = *Store::Open(dir_ + "/tuneforge.db");
    DatasetRecord d;
    d.id = "ds";
    d.sha256 = std::string(64, 'a');
    d.report.example_count = 20;
    ASSERT_TRUE(store_->PutDataset(d).ok());
    DatasetRecord bad = d;
    bad.id = "bad";
    bad.state = DatasetState::kInvalid;
    ASSERT_TRUE(store_->PutDataset(bad).ok());
    options_.lease_duration = absl::Milliseconds(300);
    options_.max_attempts = 2;
    options_.reaper_period = absl::Milliseconds(20);
    scheduler_ = *Scheduler::Create(store_.get(), options_);
  }

  JobSpec Spec(int priority = 0) {
    JobSpec s;
    s.base_model = "tiny-gpt2";
    s.training_dataset = "ds";
    s.priority = priority;
    return s;
  }

  // Blocks until AcquireJob answers.
  absl::StatusOr<std::optional<Assignment>> Acquire(const std::string& worker,
                                                    absl::Duration wait) {
    std::promise<absl::StatusOr<std::optional<Assignment>>> result;
    scheduler_->AcquireJob(worker, wait, [&](absl::StatusOr<std::optional<Assignment>> r) {
      result.set_value(std::move(r));
    });
    return result.get_future().get();
  }

  std::vector<JobState> States(const std::string& job) {
    std::vector<JobState> out;
    std::vector<Event> events = *scheduler_->ListEvents(job, 0, 1000);
    for (const Event& e : events) {
      if (auto* c = std::get_if<StateChangeEvent>(&e.payload)) out.push_back(c->to);
    }
    return out;
  }

  std::string dir_;
  SchedulerOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, CreateValidatesReferences) {
  JobSpec s = Spec();
  s.training_dataset = "missing";
  EXPECT_EQ(scheduler_->CreateJob(s).status().code(), absl::StatusCode::kInvalidArgument);
  s.training_dataset = "bad";
  auto invalid = scheduler_->CreateJob(s);
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(invalid.status().message().find("INVALID"), std::string::npos);
  s = Spec();
  s.base_model = "gpt-9";
  EXPECT_EQ(scheduler_->CreateJob(s).status().code(), absl::StatusCode::kInvalidArgument);
  auto job = scheduler_->CreateJob(Spec());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->train_examples, 18);
  EXPECT_EQ(job->validation_examples, 2);
  EXPECT_EQ(job->state, JobState::kQueued);
}

TEST_F(SchedulerTest, RequestIdMakesCreateIdempotent) {
  JobSpec s = Spec();
  s.request_id = "retry-me";
  auto a = scheduler_->CreateJob(s);
  auto b = scheduler_->CreateJob(s);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->id, b->id);
  EXPECT_EQ(scheduler_->ListJobs({}, "", 10)->size(), 1u);
}

TEST_F(SchedulerTest, HandsOutByPriorityThenAge) {
  auto low = scheduler_->CreateJob(Spec(0));
  auto high = scheduler_->CreateJob(Spec(5));
  auto low2 = scheduler_->CreateJob(Spec(0));
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  EXPECT_EQ((*Acquire(w, absl::ZeroDuration()))->job.id, high->id);
  EXPECT_EQ((*Acquire(w, absl::ZeroDuration()))->job.id, low->id);
  EXPECT_EQ((*Acquire(w, absl::ZeroDuration()))->job.id, low2->id);
  auto none = Acquire(w, absl::Milliseconds(50));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(SchedulerTest, LongPollIsAnsweredWhenAJobArrives) {
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  std::promise<std::optional<Assignment>> answer;
  std::future<std::optional<Assignment>> done = answer.get_future();
  scheduler_->AcquireJob(w, absl::Seconds(30), [&](auto r) { answer.set_value(*r); });
  EXPECT_EQ(done.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  auto job = scheduler_->CreateJob(Spec());
  ASSERT_EQ(done.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  std::optional<Assignment> got = done.get();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->job.id, job->id);
  EXPECT_EQ(got->training.sha256, std::string(64, 'a'));
  EXPECT_EQ(scheduler_->GetJob(job->id)->state, JobState::kRunning);
}

TEST_F(SchedulerTest, UnknownWorkerMustRegister) {
  auto r = Acquire("nobody", absl::ZeroDuration());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, ExpiredLeaseRequeuesThenFails) {
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto first = Acquire(w, absl::ZeroDuration());
  const std::string lease1 = (*first)->job.lease;
  // No heartbeats: the lease expires and the job is queued again.
  auto second = Acquire(w, absl::Seconds(5));
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->job.attempt, 2);
  EXPECT_NE((*second)->job.lease, lease1);
  // The first attempt's lease is fenced off.
  EXPECT_EQ(scheduler_->Heartbeat(w, job->id, lease1, 3).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(scheduler_->ReportEvent(job->id, lease1, Event{"", 0, 0, LogEvent{"info", "x"}})
                .code(),
            absl::StatusCode::kAborted);
  // Second expiry: out of attempts.
  absl::SleepFor(absl::Milliseconds(600));
  scheduler_->ReapExpired();
  auto failed = scheduler_->GetJob(job->id);
  EXPECT_EQ(failed->state, JobState::kFailed);
  EXPECT_NE(failed->error.find("lease expired"), std::string::npos);
  EXPECT_EQ(States(job->id),
            (std::vector<JobState>{JobState::kQueued, JobState::kRunning, JobState::kQueued,
                                   JobState::kRunning, JobState::kFailed}));
}

TEST_F(SchedulerTest, HeartbeatsKeepTheLeaseAndCarryCancellation) {
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  const std::string lease = (*a)->job.lease;
  for (int i = 0; i < 16; ++i) {  // 800 ms in all, well past the 300 ms lease
    absl::SleepFor(absl::Milliseconds(50));
    auto hb = scheduler_->Heartbeat(w, job->id, lease, i);
    ASSERT_TRUE(hb.ok()) << hb.status();
    EXPECT_FALSE(hb->cancel_requested);
  }
  EXPECT_EQ(scheduler_->GetJob(job->id)->state, JobState::kRunning);
  ASSERT_TRUE(scheduler_->CancelJob(job->id).ok());
  EXPECT_TRUE(scheduler_->Heartbeat(w, job->id, lease, 9)->cancel_requested);
  ASSERT_TRUE(scheduler_->FinishJob(job->id, lease, JobState::kCancelled, "").ok());
  EXPECT_EQ(scheduler_->GetJob(job->id)->state, JobState::kCancelled);
  EXPECT_EQ(scheduler_->CancelJob(job->id).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SchedulerTest, CancelQueuedJobEndsAtOnce) {
  auto job = scheduler_->CreateJob(Spec());
  auto cancelled = scheduler_->CancelJob(job->id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  EXPECT_FALSE(Acquire(w, absl::Milliseconds(30))->has_value());
}

TEST_F(SchedulerTest, EventsUpdateProgressAndNotifyWatchers) {
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  int notified = 0;
  uint64_t sub = scheduler_->Subscribe(job->id, [&] { ++notified; });
  const std::string lease = (*a)->job.lease;
  ASSERT_TRUE(scheduler_
                  ->ReportEvent(job->id, lease,
                                Event{"", 0, 0, MetricsEvent{1, 4, 10, 2.0, 1e-3, 1, 500, 64}})
                  .ok());
  ASSERT_TRUE(scheduler_
                  ->ReportEvent(job->id, lease, Event{"", 0, 0, EvaluationEvent{1, 4, 2.2, 9, 0.3}})
                  .ok());
  ASSERT_TRUE(scheduler_
                  ->ReportEvent(job->id, lease, Event{"", 0, 0, StartedEvent{17, 3, 10, 1000, 0, 2, 1000, "cpu", "fp32", "plain", 0}})
                  .ok());
  EXPECT_EQ(notified, 3);
  scheduler_->Unsubscribe(sub);
  Job j = *scheduler_->GetJob(job->id);
  EXPECT_EQ(j.progress.step, 4);
  EXPECT_EQ(j.train_examples, 17);  // the worker's split replaces the estimate
  EXPECT_EQ(j.validation_examples, 3);
  EXPECT_EQ(j.progress.train_loss, 2.0);
  EXPECT_TRUE(j.progress.has_validation_loss);
  EXPECT_EQ(j.progress.validation_loss, 2.2);
  auto events = *scheduler_->ListEvents(job->id, 0, 100);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].sequence, int64_t(i + 1));
  ASSERT_TRUE(scheduler_->FinishJob(job->id, lease, JobState::kSucceeded, "").ok());
  EXPECT_EQ(store_->GetJob(job->id)->state, JobState::kSucceeded);
}

TEST_F(SchedulerTest, RestartKeepsQueuedAndRunningJobs) {
  auto queued = scheduler_->CreateJob(Spec());
  auto running = scheduler_->CreateJob(Spec(1));
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  EXPECT_EQ((*a)->job.id, running->id);
  scheduler_.reset();
  scheduler_ = *Scheduler::Create(store_.get(), options_);
  EXPECT_EQ(scheduler_->GetJob(queued->id)->state, JobState::kQueued);
  EXPECT_EQ(scheduler_->GetJob(running->id)->state, JobState::kRunning);
  // The running job keeps its lease, so its worker carries on ...
  std::string w2 = scheduler_->RegisterWorker({"w2", "cpu", 0, ""});
  EXPECT_TRUE(scheduler_->Heartbeat(w, running->id, (*a)->job.lease, 1).ok());
  // ... and the queued job is handed out again.
  EXPECT_EQ((*Acquire(w2, absl::ZeroDuration()))->job.id, queued->id);
}

}  // namespace
}  // namespace tuneforge
