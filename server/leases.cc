// The scheduler's attempts: a job leased to a worker heartbeats, reports
// events and artifacts (checkpoints among them), and finishes, is handed
// back, or loses its lease when it expires or stalls; the reaper ends those.
#include "server/scheduler.h"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace tuneforge {
namespace {

// "; resumes from step-00000012", or "" for a job without a checkpoint.
std::string ResumeNote(const Job& job) {
  return job.checkpoint_name.empty() ? "" : absl::StrCat("; resumes from ", job.checkpoint_name);
}

// "checkpoint/step-00000012/model.safetensors" -> {"step-00000012", "model.safetensors"}.
bool SplitCheckpointPath(const std::string& path, std::string* name, std::string* file) {
  if (path.rfind("checkpoint/", 0) != 0) return false;
  const size_t slash = path.find('/', 11);
  if (slash == std::string::npos) return false;
  *name = path.substr(11, slash - 11);
  *file = path.substr(slash + 1);
  return true;
}

}  // namespace

void Scheduler::ForgetLeaseLocked(Job& job) {
  lease_deadline_ms_.erase(job.id);
  steps_.erase(job.id);
  job.worker.clear();
  job.lease.clear();
}

absl::Status Scheduler::FailAttemptLocked(Job& job, const std::string& why, Deferred& deferred) {
  // Nothing changes unless the new state commits (a full disk): the job stays
  // RUNNING under its lease, and the reaper tries again.
  const LeaseSnapshot snapshot = SnapshotLeaseLocked(job);
  absl::Status s = EndAttemptLocked(job, why, deferred);
  if (!s.ok()) RestoreLeaseLocked(job, snapshot);
  return s;
}

Scheduler::LeaseSnapshot Scheduler::SnapshotLeaseLocked(const Job& job) const {
  LeaseSnapshot snapshot{job, std::nullopt, std::nullopt};
  if (auto it = lease_deadline_ms_.find(job.id); it != lease_deadline_ms_.end()) {
    snapshot.deadline_ms = it->second;
  }
  if (auto it = steps_.find(job.id); it != steps_.end()) snapshot.step = it->second;
  return snapshot;
}

void Scheduler::RestoreLeaseLocked(Job& job, const LeaseSnapshot& snapshot) {
  job = snapshot.job;
  if (snapshot.deadline_ms) lease_deadline_ms_[job.id] = *snapshot.deadline_ms;
  if (snapshot.step) steps_[job.id] = *snapshot.step;
  queue_.erase(KeyOf(job));
}

absl::Status Scheduler::EndAttemptLocked(Job& job, const std::string& why, Deferred& deferred) {
  ForgetLeaseLocked(job);
  job.failures += 1;
  job.attempt_errors.push_back(why);
  if (job.cancel_requested) {
    return TransitionLocked(job, JobState::kCancelled, "cancelled by the user; " + why, deferred);
  }
  if (job.failures >= job.max_attempts) {
    std::string all;
    for (const std::string& e : job.attempt_errors) absl::StrAppend(&all, all.empty() ? "" : "; ", e);
    return TransitionLocked(
        job, JobState::kFailed,
        absl::StrCat(job.failures, " of ", job.max_attempts, " attempts failed: ", all), deferred);
  }
  const std::string resume = ResumeNote(job);
  if (job.pause_requested) {
    job.pause_requested = false;
    return TransitionLocked(job, JobState::kPaused, absl::StrCat(why, "; paused", resume),
                            deferred);
  }
  RETURN_IF_ERROR(TransitionLocked(job, JobState::kQueued,
                                   absl::StrCat(why, "; queued again", resume), deferred));
  queue_.insert(KeyOf(job));
  return absl::OkStatus();
}

absl::StatusOr<Job*> Scheduler::LeasedJobLocked(const std::string& job_id,
                                                const std::string& lease) {
  auto it = active_.find(job_id);
  if (it == active_.end() || it->second.state != JobState::kRunning ||
      it->second.lease != lease) {
    return absl::AbortedError(absl::StrCat(
        "job ", job_id, ": this worker's lease is no longer valid (the job ended, was cancelled, "
        "or was handed to another worker); stop working on it"));
  }
  return &it->second;
}

absl::StatusOr<HeartbeatReply> Scheduler::Heartbeat(const std::string& worker_id,
                                                    const std::string& job_id,
                                                    const std::string& lease, int64_t step) {
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, LeasedJobLocked(job_id, lease));
  if (job->worker != worker_id) {
    return absl::AbortedError(absl::StrCat("job ", job_id, " is leased to another worker"));
  }
  const int64_t deadline = NowMs() + absl::ToInt64Milliseconds(options_.lease_duration);
  lease_deadline_ms_[job_id] = deadline;
  StepSeen& seen = steps_[job_id];
  if (step != seen.step) seen = StepSeen{step, NowMs()};
  return HeartbeatReply{job->cancel_requested, job->pause_requested, deadline,
                        job->last_report_sequence};
}

absl::Status Scheduler::ReportEvent(const std::string& job_id, const std::string& lease,
                                    Event event, int64_t report_sequence) {
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, LeasedJobLocked(job_id, lease));
  if (report_sequence > 0) {
    if (report_sequence <= job->last_report_sequence) return absl::OkStatus();  // a resend
    if (report_sequence != job->last_report_sequence + 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, ": event ", report_sequence, " of this attempt arrived, but ",
          job->last_report_sequence + 1, " is the next; send the events in order"));
    }
  }
  JobProgress& p = job->progress;
  if (const auto* m = std::get_if<MetricsEvent>(&event.payload)) {
    p.epoch = m->epoch;
    p.step = m->step;
    p.total_steps = m->total_steps;
    p.tokens_seen = m->tokens_seen;
    p.train_loss = m->loss;
    p.tokens_per_second = m->tokens_per_second;
    p.eta_seconds = m->eta_seconds;
  } else if (const auto* e = std::get_if<EvaluationEvent>(&event.payload)) {
    p.validation_loss = e->validation_loss;
    p.has_validation_loss = true;
  } else if (const auto* t = std::get_if<StartedEvent>(&event.payload)) {
    // The worker's split is the real one (duplicates kept on one side).
    job->train_examples = t->train_examples;
    job->validation_examples = t->validation_examples;
    p.total_steps = t->total_steps;
  } else if (std::holds_alternative<StateChangeEvent>(event.payload)) {
    return absl::InvalidArgumentError("workers cannot report state changes; call FinishJob");
  }
  std::vector<std::string> released;
  Job before = *job;
  if (report_sequence > 0) job->last_report_sequence = report_sequence;  // with the event
  if (auto* c = std::get_if<CheckpointEvent>(&event.payload); c && c->uploaded) {
    // Its files arrived before this event: it becomes the resume point.
    if (job->pending_checkpoint_name != c->name) {
      c->uploaded = false;  // they did not: it stays on the worker only
    } else {
      released = Digests(job->checkpoint);
      job->checkpoint = std::move(job->pending_checkpoint);
      job->checkpoint_name = c->name;
      job->checkpoint_step = c->step;
      job->pending_checkpoint.clear();
      job->pending_checkpoint_name.clear();
    }
  }
  absl::Status s = CommitLocked(*job, {std::move(event)}, deferred);
  if (!s.ok()) {
    *job = std::move(before);
    return s;
  }
  ReleaseLater(std::move(released), deferred);
  return s;
}

absl::Status Scheduler::AddArtifact(const std::string& job_id, const std::string& lease,
                                    const FileRecord& artifact) {
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, LeasedJobLocked(job_id, lease));
  Job before = *job;
  std::vector<std::string> released;
  std::vector<FileRecord>* files = &job->artifacts;
  FileRecord record = artifact;
  std::string checkpoint;
  if (SplitCheckpointPath(artifact.path, &checkpoint, &record.path)) {
    if (job->pending_checkpoint_name != checkpoint) {  // a newer one: the unfinished one goes
      released = Digests(job->pending_checkpoint);
      job->pending_checkpoint.clear();
      job->pending_checkpoint_name = checkpoint;
    }
    files = &job->pending_checkpoint;
  }
  files->erase(std::remove_if(files->begin(), files->end(),
                              [&](const FileRecord& a) { return a.path == record.path; }),
               files->end());
  files->push_back(record);
  absl::Status s = store_->PutJob(*job);
  if (!s.ok()) {
    *job = std::move(before);
    return s;
  }
  ReleaseLater(std::move(released), deferred);
  return s;
}

absl::StatusOr<Job> Scheduler::LeasedJob(const std::string& job_id, const std::string& lease) {
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, LeasedJobLocked(job_id, lease));
  return *job;
}

absl::Status Scheduler::FinishJob(const std::string& job_id, const std::string& lease,
                                  JobState state, const std::string& error,
                                  const std::string& result_model) {
  if (!IsTerminal(state)) {
    return absl::InvalidArgumentError("state: a job finishes SUCCEEDED, FAILED or CANCELLED");
  }
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, LeasedJobLocked(job_id, lease));
  std::string reason = error;
  if (state == JobState::kCancelled && reason.empty()) reason = "cancelled by the user";
  if (state == JobState::kSucceeded) {
    job->progress.eta_seconds = 0;
    job->result_model = result_model;
  }
  RETURN_IF_ERROR(TransitionLocked(*job, state, reason, deferred));
  ForgetLeaseLocked(*job);
  EraseActiveLocked(job_id);
  return absl::OkStatus();
}

absl::Status Scheduler::ReleaseJob(const std::string& job_id, const std::string& lease,
                                   const std::string& reason) {
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, LeasedJobLocked(job_id, lease));
  // Unless the hand-back commits (a full disk), the worker keeps its lease
  // and tries again.
  const LeaseSnapshot snapshot = SnapshotLeaseLocked(*job);
  const std::string worker = job->worker;
  ForgetLeaseLocked(*job);
  const std::string resume = ResumeNote(*job);
  absl::Status s;
  if (job->cancel_requested) {
    s = TransitionLocked(*job, JobState::kCancelled, "cancelled by the user", deferred);
    if (s.ok()) EraseActiveLocked(job_id);
  } else if (job->pause_requested) {
    job->pause_requested = false;
    s = TransitionLocked(*job, JobState::kPaused, absl::StrCat("paused by the user", resume),
                         deferred);
  } else {
    s = TransitionLocked(*job, JobState::kQueued,
                         absl::StrCat("handed back by worker ", worker, ": ", reason, resume),
                         deferred);
    if (s.ok()) {
      queue_.insert(KeyOf(*job));
      MatchLocked(deferred);
    }
  }
  if (!s.ok()) RestoreLeaseLocked(*job, snapshot);
  return s;
}

void Scheduler::ReapExpired() {
  Deferred deferred;
  MutexLock lock(&mu_);
  const absl::Time now = options_.clock->Now();
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->second.deadline <= now) {
      deferred.calls.push_back(
          [done = std::move(it->second.done)] { done(std::optional<Assignment>()); });
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
  const int64_t now_ms = NowMs();
  std::vector<std::string> expired;
  for (const auto& [job_id, deadline] : lease_deadline_ms_) {
    if (deadline <= now_ms) expired.push_back(job_id);
  }
  struct Failed {
    std::string job_id;
    std::string why;      // "attempt N: ..."
    std::string stalled;  // for a stalled worker, the STALLED event's message
  };
  std::vector<Failed> failed;
  for (const std::string& job_id : expired) {
    auto it = active_.find(job_id);
    if (it == active_.end() || it->second.state != JobState::kRunning) {
      lease_deadline_ms_.erase(job_id);
      continue;
    }
    failed.push_back({job_id,
                      absl::StrCat("attempt ", it->second.attempt, ": worker ", it->second.worker,
                                   " stopped sending heartbeats (lease expired)"),
                      ""});
  }
  const int64_t stall_ms = absl::ToInt64Milliseconds(options_.stall_timeout);
  for (const auto& [job_id, seen] : steps_) {
    if (stall_ms <= 0 || now_ms - seen.since_ms < stall_ms) continue;
    auto it = active_.find(job_id);
    if (it == active_.end() || it->second.state != JobState::kRunning) continue;
    const std::string stalled = absl::StrCat(
        "STALLED: worker ", it->second.worker, " sent heartbeats but completed no step in ",
        absl::FormatDuration(options_.stall_timeout), " (",
        seen.step < 0 ? "none yet" : absl::StrCat("last step ", seen.step), ")");
    failed.push_back({job_id, absl::StrCat("attempt ", it->second.attempt, ": ", stalled), stalled});
  }
  for (const Failed& f : failed) {
    auto it = active_.find(f.job_id);  // a job both expired and stalled fails once
    if (it == active_.end() || it->second.state != JobState::kRunning) continue;
    Job& job = it->second;
    if (!f.stalled.empty()) {
      Event e;
      e.payload = LogEvent{"warning", f.stalled};
      if (!CommitLocked(job, {std::move(e)}, deferred).ok()) continue;
    }
    absl::Status s = FailAttemptLocked(job, f.why, deferred);
    if (s.ok() && IsTerminal(job.state)) EraseActiveLocked(f.job_id);
  }
  MatchLocked(deferred);
}

void Scheduler::ReaperLoop() {
  const auto period = absl::ToChronoMilliseconds(options_.reaper_period);
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_cv_.wait_for(lock, period, [this] { return stopping_; })) {
    lock.unlock();
    ReapExpired();
    lock.lock();
  }
}

}  // namespace tuneforge
