#include "server/scheduler.h"

#include <atomic>
#include <filesystem>
#include <future>

#include <gtest/gtest.h>

#include "common/model_config.h"

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
    options_.clock = &clock_;  // time moves only when a test says so
    Restart();
  }

  // A new scheduler over the same store, with options_ as they are now.
  void Restart() {
    scheduler_.reset();
    scheduler_ = *Scheduler::Create(store_.get(), options_);
  }

  JobSpec Spec(int priority = 0) {
    JobSpec s;
    s.base_model = "tiny-gpt2";
    s.training_dataset = "ds";
    s.priority = priority;
    return s;
  }

  // What AcquireJob answers: a job that is free now, or, when none is, the
  // empty answer once the clock has been moved past the long poll's end.
  absl::StatusOr<std::optional<Assignment>> Acquire(const std::string& worker,
                                                    absl::Duration wait) {
    std::promise<absl::StatusOr<std::optional<Assignment>>> result;
    std::future<absl::StatusOr<std::optional<Assignment>>> answer = result.get_future();
    scheduler_->AcquireJob(worker, wait, [&](absl::StatusOr<std::optional<Assignment>> r) {
      result.set_value(std::move(r));
    });
    if (answer.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      clock_.Advance(wait);
      scheduler_->ReapExpired();
    }
    return answer.get();
  }

  // Moves the clock past the scheduler's deadlines, and lets it see so.
  void Elapse(absl::Duration d) {
    clock_.Advance(d);
    scheduler_->ReapExpired();
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
  ManualClock clock_;
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

// Priorities stay in -100..100 and, for users, in their tenant's band; at
// equal priority tenants take turns, the one running fewer jobs first, and a
// job's queue position counts only its own tenant's jobs.
TEST_F(SchedulerTest, TenantsTakeTurnsAndPrioritiesStayInTheirBands) {
  for (const char* tenant : {"a", "b"}) {
    DatasetRecord d;
    d.id = std::string("ds-") + tenant;
    d.sha256 = std::string(64, 'a');
    d.report.example_count = 20;
    d.tenant = tenant;
    ASSERT_TRUE(store_->PutDataset(d).ok());
  }
  options_.quota = [](const std::string& tenant) {
    Quota q;
    if (tenant == "b") q.priority = PriorityBand{-100, 50};
    return q;
  };
  Restart();
  auto spec = [&](const std::string& tenant, int priority) {
    JobSpec s = Spec(priority);
    s.training_dataset = "ds-" + tenant;
    return s;
  };
  const Scope a{"a", false}, b{"b", false}, admin{"ops", true};
  EXPECT_EQ(scheduler_->CreateJob(spec("a", 1), a).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(scheduler_->CreateJob(spec("a", 101), admin).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->CreateJob(spec("b", 51), b).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto granted = scheduler_->CreateJob(spec("b", 50), b);
  ASSERT_TRUE(granted.ok()) << granted.status();
  ASSERT_TRUE(scheduler_->CancelJob(granted->id, b).ok());

  std::vector<std::string> a_jobs;
  for (int i = 0; i < 3; ++i) a_jobs.push_back(scheduler_->CreateJob(spec("a", 0), a)->id);
  const std::string b_job = scheduler_->CreateJob(spec("b", 0), b)->id;
  EXPECT_EQ(scheduler_->GetJob(b_job, b)->queue_position, 1);
  EXPECT_EQ(scheduler_->GetJob(a_jobs[2], a)->queue_position, 3);
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) order.push_back((*Acquire(w, absl::ZeroDuration()))->job.id);
  EXPECT_EQ(order, (std::vector<std::string>{a_jobs[0], b_job, a_jobs[1], a_jobs[2]}));
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
  Elapse(absl::Milliseconds(400));
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
  Elapse(absl::Milliseconds(400));
  auto failed = scheduler_->GetJob(job->id);
  EXPECT_EQ(failed->state, JobState::kFailed);
  EXPECT_NE(failed->error.find("lease expired"), std::string::npos);
  EXPECT_EQ(States(job->id),
            (std::vector<JobState>{JobState::kQueued, JobState::kRunning, JobState::kQueued,
                                   JobState::kRunning, JobState::kFailed}));
}

// Files under checkpoint/step-N/ collect as a pending checkpoint; the
// Checkpoint event that says `uploaded` makes it the resume point, handed to
// the next attempt, and releases the one it supersedes.
TEST_F(SchedulerTest, UploadedCheckpointIsWhereTheNextAttemptResumes) {
  std::vector<std::string> released;
  std::mutex released_mu;
  options_.release_blobs = [&](const std::vector<std::string>& d) {
    std::lock_guard<std::mutex> lock(released_mu);
    released.insert(released.end(), d.begin(), d.end());
  };
  Restart();
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  const std::string lease = (*a)->job.lease;
  auto upload = [&](const std::string& name, const std::string& sha) {
    for (const char* file : {"model.safetensors", "trainer_state.json"}) {
      ASSERT_TRUE(scheduler_
                      ->AddArtifact(job->id, lease,
                                    FileRecord{"checkpoint/" + name + "/" + file,
                                               sha + file, 10})
                      .ok());
    }
  };
  auto report = [&](const std::string& name, int64_t step, bool uploaded) {
    return scheduler_->ReportEvent(job->id, lease,
                                   Event{"", 0, 0, CheckpointEvent{name, step, 1, false, uploaded}});
  };
  upload("step-00000002", "a");
  ASSERT_TRUE(report("step-00000002", 2, true).ok());
  EXPECT_EQ(scheduler_->GetJob(job->id)->checkpoint_name, "step-00000002");
  EXPECT_TRUE(scheduler_->GetJob(job->id)->artifacts.empty());  // checkpoints are not artifacts
  // A checkpoint reported without its files stays on the worker only.
  ASSERT_TRUE(report("step-00000003", 3, true).ok());
  std::vector<Event> events = *scheduler_->ListEvents(job->id, 0, 100);
  EXPECT_FALSE(std::get<CheckpointEvent>(events.back().payload).uploaded);
  EXPECT_EQ(scheduler_->GetJob(job->id)->checkpoint_step, 2);
  upload("step-00000004", "b");
  ASSERT_TRUE(report("step-00000004", 4, true).ok());
  EXPECT_EQ(scheduler_->GetJob(job->id)->checkpoint_step, 4);
  {
    std::lock_guard<std::mutex> lock(released_mu);
    EXPECT_EQ(released, (std::vector<std::string>{"amodel.safetensors", "atrainer_state.json"}));
  }
  // The worker dies; the next attempt gets the checkpoint's files.
  Elapse(absl::Milliseconds(400));
  auto next = Acquire(w, absl::Seconds(5));
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->job.checkpoint_name, "step-00000004");
  ASSERT_EQ((*next)->job.checkpoint.size(), 2u);
  EXPECT_EQ((*next)->job.checkpoint[0].path, "model.safetensors");
  EXPECT_EQ((*next)->job.checkpoint[0].sha256, "bmodel.safetensors");
  // Its blobs count as referenced while the job holds them ...
  EXPECT_EQ(*store_->CountBlobReferences("bmodel.safetensors"), 1);
  // ... and go when it ends.
  ASSERT_TRUE(scheduler_->FinishJob(job->id, (*next)->job.lease, JobState::kFailed, "x").ok());
  EXPECT_EQ(*store_->CountBlobReferences("bmodel.safetensors"), 0);
  std::lock_guard<std::mutex> lock(released_mu);
  EXPECT_EQ(released.size(), 4u);
}

// A worker that stops hands its job back: queued again, resumed elsewhere,
// and not counted against max_attempts (2 here).
TEST_F(SchedulerTest, HandBacksDoNotCountAsFailures) {
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  for (int i = 1; i <= 3; ++i) {
    auto a = Acquire(w, absl::Seconds(5));
    ASSERT_TRUE(a->has_value());
    EXPECT_EQ((*a)->job.attempt, i);
    ASSERT_TRUE(scheduler_->ReleaseJob(job->id, (*a)->job.lease, "the worker is stopping").ok());
    EXPECT_EQ(scheduler_->GetJob(job->id)->state, JobState::kQueued);
  }
  Job queued = *scheduler_->GetJob(job->id);
  EXPECT_EQ(queued.failures, 0);
  EXPECT_EQ(queued.queue_position, 1);
  EXPECT_NE(queued.wait_reason.find(
                "position 1 among tenant default's queued jobs; waiting for a free worker (1 "
                "worker registered)"),
            std::string::npos)
      << queued.wait_reason;
  std::vector<Event> events = *scheduler_->ListEvents(job->id, 0, 100);
  EXPECT_NE(std::get<StateChangeEvent>(events.back().payload)
                .reason.find("handed back by worker " + w + ": the worker is stopping"),
            std::string::npos);
  // Failures do count, and the job fails listing each one.
  for (int i = 0; i < 2; ++i) {
    auto a = Acquire(w, absl::Seconds(5));
    ASSERT_TRUE(a->has_value());
    Elapse(absl::Milliseconds(400));
  }
  Job failed = *scheduler_->GetJob(job->id);
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_EQ(failed.failures, 2);
  EXPECT_EQ(failed.attempt_errors.size(), 2u);
  EXPECT_NE(failed.error.find("2 of 2 attempts failed: attempt 4: "), std::string::npos)
      << failed.error;
  EXPECT_NE(failed.error.find("; attempt 5: "), std::string::npos) << failed.error;
}

// A job goes only to a worker with the memory it needs; the others pass it.
TEST_F(SchedulerTest, JobsGoToWorkersThatCanHoldThem) {
  JobSpec big = Spec();
  big.base_model = "small-gpt2";  // 25.6M parameters: 410 MB for full fine-tuning
  auto large = scheduler_->CreateJob(big);
  auto small = scheduler_->CreateJob(Spec());  // tiny-gpt2: 14 MB
  EXPECT_EQ(large->memory_estimate_bytes, ParameterCount(FindPreset("small-gpt2")->config) * 16);
  std::string little = scheduler_->RegisterWorker({"little", "cpu", 100 << 20, ""});
  auto a = Acquire(little, absl::Seconds(5));
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->job.id, small->id);  // the older, larger job waits
  Job waiting = *scheduler_->GetJob(large->id);
  EXPECT_EQ(waiting.state, JobState::kQueued);
  EXPECT_NE(waiting.wait_reason.find("no registered worker can hold it: it needs 0.4 GiB"),
            std::string::npos)
      << waiting.wait_reason;
  std::string unknown = scheduler_->RegisterWorker({"gpu", "cuda", 0, ""});  // memory not known
  auto b = Acquire(unknown, absl::Seconds(5));
  ASSERT_TRUE(b->has_value());
  EXPECT_EQ((*b)->job.id, large->id);
}

TEST_F(SchedulerTest, PauseAndResume) {
  auto queued = scheduler_->CreateJob(Spec());
  // A queued job pauses at once and leaves the queue.
  EXPECT_EQ(scheduler_->PauseJob(queued->id)->state, JobState::kPaused);
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  EXPECT_FALSE(Acquire(w, absl::Milliseconds(50))->has_value());
  EXPECT_NE(scheduler_->GetJob(queued->id)->wait_reason.find("paused"), std::string::npos);
  EXPECT_EQ(scheduler_->ResumeJob(queued->id)->state, JobState::kQueued);
  // A running one is paused by its worker: asked at the heartbeat, then
  // handed back PAUSED.
  auto a = Acquire(w, absl::Seconds(5));
  ASSERT_TRUE(a->has_value());
  const std::string lease = (*a)->job.lease;
  EXPECT_FALSE(scheduler_->Heartbeat(w, queued->id, lease, 1)->pause_requested);
  EXPECT_EQ(scheduler_->PauseJob(queued->id)->state, JobState::kRunning);
  EXPECT_TRUE(scheduler_->Heartbeat(w, queued->id, lease, 2)->pause_requested);
  ASSERT_TRUE(scheduler_->ReleaseJob(queued->id, lease, "paused by the user").ok());
  EXPECT_EQ(scheduler_->GetJob(queued->id)->state, JobState::kPaused);
  EXPECT_EQ(scheduler_->GetJob(queued->id)->failures, 0);
  EXPECT_EQ(scheduler_->ResumeJob(queued->id)->state, JobState::kQueued);
  auto again = Acquire(w, absl::Seconds(5));
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ((*again)->job.attempt, 2);
  // Pausing or resuming an ended job is refused.
  ASSERT_TRUE(scheduler_->FinishJob(queued->id, (*again)->job.lease, JobState::kSucceeded, "").ok());
  EXPECT_EQ(scheduler_->PauseJob(queued->id).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler_->ResumeJob(queued->id).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Heartbeats without step progress for stall_timeout: STALLED, and the
// attempt fails.
TEST_F(SchedulerTest, NoStepProgressIsStalled) {
  options_.stall_timeout = absl::Milliseconds(200);
  options_.lease_duration = absl::Seconds(30);
  Restart();
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  const std::string lease = (*a)->job.lease;
  for (int i = 0; i < 3; ++i) {  // progress keeps it alive
    clock_.Advance(absl::Milliseconds(120));
    ASSERT_TRUE(scheduler_->Heartbeat(w, job->id, lease, i + 1).ok());
    scheduler_->ReapExpired();
  }
  EXPECT_EQ(scheduler_->GetJob(job->id)->state, JobState::kRunning);
  for (int i = 0; i < 3; ++i) {  // the same step over and over does not
    clock_.Advance(absl::Milliseconds(120));
    (void)scheduler_->Heartbeat(w, job->id, lease, 3);
    scheduler_->ReapExpired();
  }
  Job stalled = *scheduler_->GetJob(job->id);
  EXPECT_EQ(stalled.state, JobState::kQueued);
  EXPECT_EQ(stalled.failures, 1);
  EXPECT_EQ(scheduler_->Heartbeat(w, job->id, lease, 4).status().code(),
            absl::StatusCode::kAborted);  // that worker is told to stop
  bool logged = false;
  const std::vector<Event> events = *scheduler_->ListEvents(job->id, 0, 100);
  for (const Event& e : events) {
    if (auto* l = std::get_if<LogEvent>(&e.payload)) {
      logged = logged || l->message.rfind("STALLED: worker " + w, 0) == 0;
    }
  }
  EXPECT_TRUE(logged);
}

TEST_F(SchedulerTest, HeartbeatsKeepTheLeaseAndCarryCancellation) {
  auto job = scheduler_->CreateJob(Spec());
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  const std::string lease = (*a)->job.lease;
  for (int i = 0; i < 16; ++i) {  // 800 ms in all, well past the 300 ms lease
    Elapse(absl::Milliseconds(50));
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
  std::atomic<int> notified{0};
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
  // Told on the notifier thread, at least once (events close together are
  // announced together), at most once per event: these three and the
  // assignment's, whose notice may still have been on its way.
  for (int i = 0; i < 200 && notified == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_GE(notified.load(), 1);
  EXPECT_LE(notified.load(), 4);
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
  // The newest events come from memory, the same as the store holds them.
  for (int64_t after : {0, 1, 3, 4, 9}) {
    std::vector<Event> memory = *scheduler_->ListEvents(job->id, after, 2);
    std::vector<Event> disk = *store_->ListEvents(job->id, after, 2);
    ASSERT_EQ(memory.size(), disk.size()) << "after " << after;
    for (size_t i = 0; i < memory.size(); ++i) {
      EXPECT_EQ(memory[i].sequence, disk[i].sequence);
      EXPECT_EQ(PayloadToJson(memory[i]), PayloadToJson(disk[i]));
    }
  }
  ASSERT_TRUE(scheduler_->FinishJob(job->id, lease, JobState::kSucceeded, "").ok());
  EXPECT_EQ(store_->GetJob(job->id)->state, JobState::kSucceeded);
}

TEST_F(SchedulerTest, RestartKeepsQueuedAndRunningJobs) {
  auto queued = scheduler_->CreateJob(Spec());
  auto running = scheduler_->CreateJob(Spec(1));
  std::string w = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  auto a = Acquire(w, absl::ZeroDuration());
  EXPECT_EQ((*a)->job.id, running->id);
  Restart();
  EXPECT_EQ(scheduler_->GetJob(queued->id)->state, JobState::kQueued);
  EXPECT_EQ(scheduler_->GetJob(running->id)->state, JobState::kRunning);
  // The running job keeps its lease, so its worker carries on ...
  std::string w2 = scheduler_->RegisterWorker({"w2", "cpu", 0, ""});
  EXPECT_TRUE(scheduler_->Heartbeat(w, running->id, (*a)->job.lease, 1).ok());
  // ... and the queued job is handed out again.
  EXPECT_EQ((*Acquire(w2, absl::ZeroDuration()))->job.id, queued->id);
}

// Ids come from SchedulerOptions::new_id: a test may name jobs and leases
// in order, and a lease token is two fresh ids.
TEST_F(SchedulerTest, JobIdsAndLeasesComeFromTheInjectedIdSource) {
  int next = 0;
  options_.new_id = [&next] { return "id" + std::to_string(++next); };
  Restart();
  absl::StatusOr<Job> first = scheduler_->CreateJob(Spec());
  absl::StatusOr<Job> second = scheduler_->CreateJob(Spec());
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->id, "id1");
  EXPECT_EQ(second->id, "id2");
  const std::string worker = scheduler_->RegisterWorker({"w", "cpu", 0, "test"});
  EXPECT_EQ(worker, "id3");
  absl::StatusOr<std::optional<Assignment>> a = Acquire(worker, absl::Seconds(1));
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->job.id, "id1");
  EXPECT_EQ((*a)->job.lease, "id4id5");
}

}  // namespace
}  // namespace tuneforge

namespace tuneforge {
namespace {

// A tenant at its limit of running jobs waits; others' jobs pass it in the
// queue, and its next job starts when one of its own ends.
TEST_F(SchedulerTest, TenantsRunningJobLimitLetsOthersPass) {
  options_.quota = [](const std::string& tenant) {
    Quota q;
    if (tenant == "busy") q.running_jobs = 1;
    return q;
  };
  Restart();
  DatasetRecord d;
  d.id = "other-ds";
  d.tenant = "other";
  d.sha256 = std::string(64, 'b');
  d.report.example_count = 20;
  ASSERT_TRUE(store_->PutDataset(d).ok());
  d.id = "busy-ds";
  d.tenant = "busy";
  ASSERT_TRUE(store_->PutDataset(d).ok());
  JobSpec busy = Spec();
  busy.training_dataset = "busy-ds";
  JobSpec other = Spec();
  other.training_dataset = "other-ds";
  auto first = scheduler_->CreateJob(busy, Scope{"busy", false});
  auto second = scheduler_->CreateJob(busy, Scope{"busy", false});
  auto third = scheduler_->CreateJob(other, Scope{"other", false});
  ASSERT_TRUE(first.ok() && second.ok() && third.ok());
  // Another tenant's dataset is as good as missing.
  EXPECT_EQ(scheduler_->CreateJob(busy, Scope{"other", false}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->GetJob(first->id, Scope{"other", false}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->CancelJob(first->id, Scope{"other", false}).status().code(),
            absl::StatusCode::kNotFound);

  std::string w1 = scheduler_->RegisterWorker({"w1", "cpu", 0, ""});
  std::string w2 = scheduler_->RegisterWorker({"w2", "cpu", 0, ""});
  auto a = Acquire(w1, absl::ZeroDuration());
  auto b = Acquire(w2, absl::ZeroDuration());
  ASSERT_TRUE(a.ok() && *a && b.ok() && *b);
  EXPECT_EQ((*a)->job.id, first->id);
  EXPECT_EQ((*b)->job.id, third->id);  // the second waits for the first
  Job waiting = *scheduler_->GetJob(second->id);
  EXPECT_NE(waiting.wait_reason.find("tenant busy runs 1 jobs"), std::string::npos)
      << waiting.wait_reason;
  EXPECT_FALSE(*Acquire(w2, absl::ZeroDuration()));
  ASSERT_TRUE(scheduler_->FinishJob(first->id, (*a)->job.lease, JobState::kSucceeded, "").ok());
  auto c = Acquire(w1, absl::ZeroDuration());
  ASSERT_TRUE(c.ok() && *c);
  EXPECT_EQ((*c)->job.id, second->id);
}

}  // namespace
}  // namespace tuneforge
