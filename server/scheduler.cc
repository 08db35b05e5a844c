// The scheduler's jobs: creating, reading, cancelling, pausing and resuming
// them, committing their events and state changes. Placement (workers and
// the queue's order) is in placement.cc, attempts and leases in leases.cc.
#include "server/scheduler.h"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/models.h"

namespace tuneforge {

Scheduler::Scheduler(Store* store, SchedulerOptions options)
    : store_(store), options_(options) {}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Store* store,
                                                             SchedulerOptions options) {
  std::unique_ptr<Scheduler> s(new Scheduler(store, options));
  ASSIGN_OR_RETURN(std::vector<Job> jobs, store->LoadActiveJobs());
  {
    MutexLock lock(&s->mu_);
    const int64_t deadline =
        options.clock->NowMs() + absl::ToInt64Milliseconds(options.lease_duration);
    for (Job& job : jobs) {
      if (job.state == JobState::kQueued) s->queue_.insert(KeyOf(job));
      s->last_submit_seq_ = std::max(s->last_submit_seq_, job.submit_seq);
      // A running job keeps its lease for one more lease period: its worker may
      // reconnect and carry on; if not, the reaper requeues it.
      if (job.state == JobState::kRunning) {
        s->lease_deadline_ms_[job.id] = deadline;
        s->steps_[job.id] = StepSeen{job.progress.step, options.clock->NowMs()};
      }
      s->active_.emplace(job.id, std::move(job));
    }
  }
  s->reaper_ = std::thread([p = s.get()] { p->ReaperLoop(); });
  return s;
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  events_.reset();
  std::map<uint64_t, Waiter> waiters;
  {
    MutexLock lock(&mu_);
    waiters.swap(waiters_);
  }
  for (auto& [ticket, w] : waiters) {
    w.done(absl::UnavailableError("the scheduler is shutting down; retry"));
  }
}

Scheduler::QueueKey Scheduler::KeyOf(const Job& job) {
  return {-job.spec.priority, job.create_time_ms, job.submit_seq, job.id};
}

absl::Status Scheduler::CommitLocked(Job& job, std::vector<Event> events, Deferred& deferred) {
  Job next = job;
  const int64_t now = NowMs();
  for (Event& e : events) {
    e.job_id = job.id;
    e.sequence = ++next.last_sequence;
    e.time_ms = now;
  }
  RETURN_IF_ERROR(store_->PutJob(next, events));
  job = std::move(next);
  events_->Append(job.id, std::move(events));
  return absl::OkStatus();
}

void Scheduler::EraseActiveLocked(const std::string& job_id) {
  active_.erase(job_id);
  events_->Forget(job_id);
}

absl::Status Scheduler::TransitionLocked(Job& job, JobState to, const std::string& reason,
                                         Deferred& deferred) {
  const JobState from = job.state;
  Job before = job;
  job.state = to;
  std::vector<std::string> released;
  if (IsTerminal(to)) {
    job.end_time_ms = NowMs();
    job.worker.clear();
    job.lease.clear();
    if (to != JobState::kSucceeded) job.error = reason;
    // Nothing resumes an ended job: its checkpoints go.
    released = Digests(job.checkpoint);
    for (std::string& d : Digests(job.pending_checkpoint)) released.push_back(std::move(d));
    job.checkpoint.clear();
    job.checkpoint_name.clear();
    job.checkpoint_step = 0;
    job.pending_checkpoint.clear();
    job.pending_checkpoint_name.clear();
  }
  Event e;
  e.payload = StateChangeEvent{from, to, reason};
  absl::Status s = CommitLocked(job, {std::move(e)}, deferred);
  if (!s.ok()) {
    job = std::move(before);
    return s;
  }
  ReleaseLater(std::move(released), deferred);
  return s;
}

void Scheduler::ReleaseLater(std::vector<std::string> digests, Deferred& deferred) const {
  if (digests.empty() || !options_.release_blobs) return;
  deferred.calls.push_back(
      [f = options_.release_blobs, digests = std::move(digests)] { f(digests); });
}

namespace {

// `existing` was created under the request_id of `spec`. An idempotency key
// names one request: a retry gets its job, another request is refused.
absl::StatusOr<Job> SameRequest(Job existing, const JobSpec& spec) {
  const std::vector<std::string> differ = SpecDifferences(existing.spec, spec);
  if (differ.empty()) return existing;
  return absl::AlreadyExistsError(absl::StrCat(
      "job.request_id: '", spec.request_id, "' was used for job ", existing.id,
      ", created with other settings (", absl::StrJoin(differ, ", "),
      " differ); a retry must send the same request, a new job a new request_id"));
}

}  // namespace

absl::Status Scheduler::CheckPriority(int priority, const Scope& scope) const {
  if (priority < kMinPriority || priority > kMaxPriority) {
    return absl::InvalidArgumentError(absl::StrCat("job.priority: ", priority, " is outside ",
                                                   kMinPriority, "..", kMaxPriority));
  }
  if (scope.all_tenants || !options_.quota) return absl::OkStatus();  // admins: any
  const PriorityBand band = options_.quota(scope.tenant).priority;
  if (priority < band.min || priority > band.max) {
    return absl::PermissionDeniedError(absl::StrCat(
        "job.priority: tenant ", scope.tenant, " may use priorities ", band.min, "..", band.max,
        ", not ", priority, " (an admin grants a wider band with priority=MIN..MAX on the "
        "tenant's quota line)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Job> Scheduler::CreateJob(JobSpec spec, const Scope& scope) {
  std::optional<Job> existing;
  if (!spec.request_id.empty()) {
    ASSIGN_OR_RETURN(existing, store_->FindJobByRequestId(scope.tenant, spec.request_id));
  }
  // "jobs/{id}": continue from what that job produced.
  if (existing && spec.base_model.rfind("jobs/", 0) == 0) {
    // As the first request's was: the base that job had.
    if (absl::StatusOr<Job> source = GetJob(spec.base_model.substr(5), scope); source.ok()) {
      spec.base_model = source->result_model;
    }
  }
  if (existing) return SameRequest(*std::move(existing), spec);
  RETURN_IF_ERROR(CheckPriority(spec.priority, scope));
  if (spec.base_model.rfind("jobs/", 0) == 0) {
    const std::string source = spec.base_model.substr(5);
    absl::StatusOr<Job> earlier = GetJob(source, scope);
    if (absl::IsNotFound(earlier.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat("job.base_model: job '", spec.base_model, "' does not exist"));
    }
    RETURN_IF_ERROR(earlier.status());
    if (earlier->result_model.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job.base_model: job ", source, " has produced no model (it is ",
          std::string(JobStateName(earlier->state)), "); a job's model exists once it SUCCEEDED"));
    }
    spec.base_model = earlier->result_model;
  }
  std::string architecture;
  int64_t parameters = 0;
  if (const Preset* p = FindPreset(spec.base_model)) {
    architecture = ArchitectureName(p->config.architecture);
    parameters = ParameterCount(p->config);
  } else {
    absl::StatusOr<ModelRecord> m = store_->GetModel(spec.base_model, scope.ListFilter());
    if (absl::IsNotFound(m.status())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job.base_model: no model 'models/", spec.base_model, "'; see ListModels"));
    }
    RETURN_IF_ERROR(m.status());
    architecture = m->architecture;
    parameters = m->parameter_count;
  }
  for (const std::string& target : spec.lora.targets) {
    if (!IsLoraTarget(architecture, target)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job.lora.target_modules: '", target, "' matches no projection of a ", architecture,
          " model (", LoraTargetsOf(architecture), ")"));
    }
  }
  auto ready_dataset = [&](const std::string& id,
                           const char* field) -> absl::StatusOr<DatasetRecord> {
    absl::StatusOr<DatasetRecord> d = store_->GetDataset(id, scope.ListFilter());
    if (absl::IsNotFound(d.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": dataset 'datasets/", id, "' does not exist"));
    }
    if (d.ok() && d->state != DatasetState::kReady) {
      return absl::FailedPreconditionError(absl::StrCat(
          field, ": dataset 'datasets/", id, "' is INVALID with ", d->report.error_count,
          " errors; see its report with `tuneforge datasets get ", id, "`"));
    }
    return d;
  };
  ASSIGN_OR_RETURN(DatasetRecord train, ready_dataset(spec.training_dataset,
                                                      "job.training_dataset"));
  Job job;
  if (!spec.validation_dataset.empty()) {
    ASSIGN_OR_RETURN(DatasetRecord val, ready_dataset(spec.validation_dataset,
                                                      "job.validation_dataset"));
    job.train_examples = train.report.example_count;
    job.validation_examples = val.report.example_count;
  } else {
    job.validation_examples = ValidationCount(train.report.example_count, spec.validation_split);
    job.train_examples = train.report.example_count - job.validation_examples;
  }
  job.id = options_.new_id();
  job.tenant = scope.tenant;
  job.memory_estimate_bytes = parameters * (spec.lora.rank > 0 ? 4 : 16);
  job.spec = std::move(spec);
  job.state = JobState::kQueued;
  job.create_time_ms = NowMs();
  job.max_attempts = options_.max_attempts;
  job.progress.total_epochs = job.spec.hyperparameters.epochs;

  Deferred deferred;
  MutexLock lock(&mu_);
  if (const int64_t limit = options_.quota ? options_.quota(job.tenant).queued_jobs : 0) {
    int64_t waiting = 0;
    for (const auto& [id, j] : active_) {
      waiting += j.tenant == job.tenant && j.state != JobState::kRunning;
    }
    if (waiting >= limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant ", job.tenant, " has ", waiting, " queued or paused jobs, its quota is ", limit,
          "; wait for some to start or cancel them"));
    }
  }
  job.submit_seq = ++last_submit_seq_;
  Event created;
  created.payload = StateChangeEvent{JobState::kUnspecified, JobState::kQueued, "created"};
  absl::Status committed = CommitLocked(job, {std::move(created)}, deferred);
  if (!committed.ok()) {
    // A concurrent request with the same request_id won the race.
    if (!job.spec.request_id.empty()) {
      absl::StatusOr<std::optional<Job>> winner =
          store_->FindJobByRequestId(job.tenant, job.spec.request_id);
      if (winner.ok() && *winner) return SameRequest(**std::move(winner), job.spec);
    }
    return committed;
  }
  active_[job.id] = job;
  queue_.insert(KeyOf(job));
  MatchLocked(deferred);
  return active_[job.id];
}

absl::StatusOr<Job> Scheduler::GetJob(const std::string& id) {
  {
    MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      Job job = it->second;
      ExplainWaitLocked(job);
      return job;
    }
  }
  return store_->GetJob(id);
}

absl::StatusOr<Job> Scheduler::GetJob(const std::string& id, const Scope& scope) {
  {
    MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end() && scope.Sees(it->second.tenant)) {
      Job job = it->second;
      ExplainWaitLocked(job);
      return job;
    }
  }
  // Another tenant's job, active or not, takes the path of a missing one
  // (the same query of the store, finding nothing), so the time taken does
  // not tell them apart.
  return store_->GetJob(id, scope.ListFilter());
}

absl::StatusOr<std::vector<Job>> Scheduler::ListJobs(const JobFilter& filter,
                                                     const std::string& after_id, int limit) {
  // Active jobs are written through to the store, so the store is complete.
  return store_->ListJobs(filter, after_id, limit);
}

absl::StatusOr<Job*> Scheduler::ActiveJobLocked(const std::string& id, const char* verb,
                                                const Scope& scope) {
  auto it = active_.find(id);
  if (it != active_.end() && scope.Sees(it->second.tenant)) return &it->second;
  // Another tenant's job takes the path of a missing one, as in GetJob().
  ASSIGN_OR_RETURN(Job done, store_->GetJob(id, scope.ListFilter()));
  return absl::FailedPreconditionError(absl::StrCat(
      "job ", id, " already ended ", std::string(JobStateName(done.state)), "; nothing to ", verb));
}

absl::StatusOr<Job> Scheduler::CancelJob(const std::string& id, const Scope& scope) {
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * active, ActiveJobLocked(id, "cancel", scope));
  Job& job = *active;
  if (job.state == JobState::kRunning) {
    // The worker learns it at its next heartbeat and finishes the job CANCELLED.
    if (!job.cancel_requested) {
      job.cancel_requested = true;
      Event e;
      e.payload = LogEvent{"info", "cancellation requested; stopping the worker"};
      RETURN_IF_ERROR(CommitLocked(job, {std::move(e)}, deferred));
    }
    return job;
  }
  queue_.erase(KeyOf(job));  // QUEUED or PAUSED
  RETURN_IF_ERROR(TransitionLocked(job, JobState::kCancelled, "cancelled by the user", deferred));
  Job result = job;
  EraseActiveLocked(id);
  return result;
}

absl::StatusOr<Job> Scheduler::PauseJob(const std::string& id, const Scope& scope) {
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * active, ActiveJobLocked(id, "pause", scope));
  Job& job = *active;
  if (job.state == JobState::kQueued) {
    queue_.erase(KeyOf(job));
    RETURN_IF_ERROR(TransitionLocked(job, JobState::kPaused, "paused by the user", deferred));
  } else if (job.state == JobState::kRunning && !job.pause_requested) {
    // The worker learns it at its next heartbeat, checkpoints and hands it back.
    job.pause_requested = true;
    Event e;
    e.payload = LogEvent{"info", "pause requested; the worker checkpoints and hands the job back"};
    RETURN_IF_ERROR(CommitLocked(job, {std::move(e)}, deferred));
  }
  Job result = job;
  ExplainWaitLocked(result);
  return result;
}

absl::StatusOr<Job> Scheduler::ResumeJob(const std::string& id, const Scope& scope) {
  Deferred deferred;
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * active, ActiveJobLocked(id, "resume", scope));
  Job& job = *active;
  if (job.state == JobState::kPaused) {
    RETURN_IF_ERROR(TransitionLocked(
        job, JobState::kQueued,
        job.checkpoint_name.empty() ? "resumed by the user"
                                    : absl::StrCat("resumed by the user; continues from ",
                                                   job.checkpoint_name),
        deferred));
    queue_.insert(KeyOf(job));
  } else if (job.state == JobState::kRunning && job.pause_requested) {
    job.pause_requested = false;
    Event e;
    e.payload = LogEvent{"info", "the pause was called off"};
    RETURN_IF_ERROR(CommitLocked(job, {std::move(e)}, deferred));
  }
  Job result = job;
  MatchLocked(deferred);
  ExplainWaitLocked(result);
  return result;
}

absl::StatusOr<std::vector<Event>> Scheduler::ListEvents(const std::string& job_id,
                                                         int64_t after_sequence, int limit) {
  if (std::optional<std::vector<Event>> recent = events_->Recent(job_id, after_sequence, limit)) {
    return *std::move(recent);
  }
  return store_->ListEvents(job_id, after_sequence, limit);
}

uint64_t Scheduler::Subscribe(const std::string& job_id, Listener listener) {
  return events_->Subscribe(job_id, std::move(listener));
}

void Scheduler::Unsubscribe(uint64_t id) { events_->Unsubscribe(id); }

}  // namespace tuneforge
