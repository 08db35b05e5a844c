#include "server/scheduler.h"

#include <algorithm>
#include <chrono>

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/models.h"

namespace tuneforge {

// Callbacks collected under the lock and run after it is released: declare a
// Deferred before the MutexLock so it is destroyed after the unlock.
struct Scheduler::Deferred {
  std::vector<std::function<void()>> calls;
  ~Deferred() {
    for (auto& call : calls) call();
  }
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewId() {
  // From the kernel's CSPRNG through OpenSSL: ids (and the lease tokens made
  // of them) cannot be predicted from the ones a tenant has seen. Each byte
  // is used only below the largest multiple of the alphabet's size, so every
  // character is equally likely.
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id;
  id.reserve(12);
  while (id.size() < 12) {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) {
      spdlog::critical("the system's random number generator failed");
      std::abort();
    }
    for (unsigned char b : bytes) {
      if (id.size() == 12) break;
      if (id.empty()) {
        if (b < 26 * 9) id += kChars[b % 26];  // a letter first
      } else if (b < 36 * 7) {
        id += kChars[b % 36];
      }
    }
  }
  return id;
}

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
  s->notifier_ = std::thread([p = s.get()] { p->NotifierLoop(); });
  return s;
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notifier_stopping_ = true;
  }
  notify_cv_.notify_all();
  if (notifier_.joinable()) notifier_.join();
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
  if (!events.empty()) {
    {
      MutexLock lock(&events_mu_);
      std::deque<Event>& recent = recent_[job.id];
      for (Event& e : events) recent.push_back(std::move(e));
      while (recent.size() > kRecentEvents) recent.pop_front();
    }
    {
      std::lock_guard<std::mutex> lock(notify_mu_);
      to_notify_.insert(job.id);
    }
    notify_cv_.notify_one();
  }
  return absl::OkStatus();
}

void Scheduler::EraseActiveLocked(const std::string& job_id) {
  active_.erase(job_id);
  MutexLock lock(&events_mu_);
  recent_.erase(job_id);
}

void Scheduler::NotifierLoop() {
  std::unique_lock<std::mutex> lock(notify_mu_);
  while (true) {
    notify_cv_.wait(lock, [this] { return notifier_stopping_ || !to_notify_.empty(); });
    if (notifier_stopping_) return;
    std::set<std::string> jobs;
    jobs.swap(to_notify_);
    lock.unlock();
    std::vector<Listener> calls;
    {
      MutexLock state(&mu_);
      for (const auto& [id, entry] : listeners_) {
        if (jobs.count(entry.first) > 0) calls.push_back(entry.second);
      }
    }
    for (const Listener& call : calls) call();
    lock.lock();
  }
}

namespace {

std::vector<std::string> Digests(const std::vector<FileRecord>& files) {
  std::vector<std::string> out;
  for (const FileRecord& f : files) out.push_back(f.sha256);
  return out;
}

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

void Scheduler::ExplainWaitLocked(Job& job) const {
  job.queue_position = 0;
  job.wait_reason.clear();
  if (job.state == JobState::kPaused) {
    job.wait_reason = "paused; ResumeJob queues it again";
    return;
  }
  if (job.state != JobState::kQueued) return;
  // Only the tenant's own jobs are counted or named: another tenant learns
  // nothing of them from here.
  int position = 1;
  for (const QueueKey& key : queue_) {
    if (std::get<3>(key) == job.id) break;
    position += active_.at(std::get<3>(key)).tenant == job.tenant;
  }
  job.queue_position = position;
  const std::string where =
      absl::StrCat("position ", position, " among tenant ", job.tenant, "'s queued jobs");
  const std::map<std::string, int64_t> by_tenant = RunningByTenantLocked();
  if (AtRunningLimit(job, by_tenant)) {
    job.wait_reason = absl::StrCat(where, "; tenant ", job.tenant, " runs ",
                                   by_tenant.at(job.tenant), " jobs, its quota of running jobs");
    return;
  }
  int64_t largest = 0;
  bool capable = false;
  for (const auto& [id, w] : workers_) {
    capable = capable || CanHoldLocked(id, job);
    largest = std::max(largest, w.memory_bytes);
  }
  if (!workers_.empty() && !capable) {
    job.wait_reason = absl::StrFormat(
        "%s; no registered worker can hold it: it needs %.1f GiB for weights, gradients and "
        "optimizer state, the largest worker has %.1f GiB",
        where, double(job.memory_estimate_bytes) / (1 << 30), double(largest) / (1 << 30));
  } else if (workers_.empty()) {
    job.wait_reason = absl::StrCat(where, "; no worker has registered");
  } else {
    job.wait_reason = absl::StrCat(where, "; waiting for a free worker (", workers_.size(),
                                   workers_.size() == 1 ? " worker" : " workers", " registered)");
  }
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
  job.id = NewId();
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
  {
    MutexLock lock(&events_mu_);
    auto it = recent_.find(job_id);
    // Served from memory when the newest events cover what is asked for.
    // Their sequence numbers are consecutive, so the first one wanted is
    // found by arithmetic: a watcher that is up to date costs nothing.
    if (it != recent_.end() && !it->second.empty() &&
        after_sequence >= it->second.front().sequence - 1) {
      const std::deque<Event>& recent = it->second;
      const auto first = static_cast<size_t>(
          std::min<int64_t>(after_sequence - recent.front().sequence + 1,
                            static_cast<int64_t>(recent.size())));
      const size_t end = std::min(recent.size(), first + static_cast<size_t>(std::max(limit, 0)));
      return std::vector<Event>(recent.begin() + first, recent.begin() + end);
    }
  }
  return store_->ListEvents(job_id, after_sequence, limit);
}

std::string Scheduler::RegisterWorker(const WorkerInfo& info) {
  std::string id = NewId();
  MutexLock lock(&mu_);
  workers_[id] = info;
  return id;
}

uint64_t Scheduler::AcquireJob(const std::string& worker_id, absl::Duration wait,
                               AcquireCallback done) {
  Deferred deferred;
  MutexLock lock(&mu_);
  if (workers_.count(worker_id) == 0) {
    deferred.calls.push_back([done] {
      done(absl::NotFoundError("unknown worker; register again (the scheduler restarted?)"));
    });
    return 0;
  }
  const uint64_t ticket = next_ticket_++;
  waiters_[ticket] = Waiter{worker_id, options_.clock->Now() + wait, std::move(done)};
  MatchLocked(deferred);
  return ticket;
}

void Scheduler::CancelAcquire(uint64_t ticket) {
  Deferred deferred;
  MutexLock lock(&mu_);
  auto it = waiters_.find(ticket);
  if (it == waiters_.end()) return;  // already answered
  deferred.calls.push_back([done = std::move(it->second.done)] {
    done(absl::CancelledError("the worker went away"));
  });
  waiters_.erase(it);
}

bool Scheduler::CanHoldLocked(const std::string& worker_id, const Job& job) const {
  auto it = workers_.find(worker_id);
  const int64_t memory = it == workers_.end() ? 0 : it->second.memory_bytes;
  return memory <= 0 || memory >= job.memory_estimate_bytes;  // 0: not reported
}

void Scheduler::MatchLocked(Deferred& deferred) {
  // Higher priority first. At equal priority tenants take turns: the job of
  // the tenant running the fewest jobs goes first, and a tenant's own jobs
  // go in submission order. Each goes to the longest-waiting worker that can
  // hold it; a job no waiting worker can hold lets the next ones pass, and
  // jobs of a tenant at its limit of running jobs wait.
  while (!queue_.empty() && !waiters_.empty()) {
    const std::map<std::string, int64_t> running = RunningByTenantLocked();
    const Job* best = nullptr;
    int64_t best_running = 0;
    std::map<uint64_t, Waiter>::iterator best_waiter;
    for (const QueueKey& key : queue_) {
      const Job& job = active_.at(std::get<3>(key));
      if (best != nullptr && (job.spec.priority < best->spec.priority || best_running == 0)) break;
      if (AtRunningLimit(job, running)) continue;
      auto waiter = std::find_if(waiters_.begin(), waiters_.end(), [&](const auto& w) {
        return CanHoldLocked(w.second.worker_id, job);
      });
      if (waiter == waiters_.end()) continue;
      auto it = running.find(job.tenant);
      const int64_t runs = it == running.end() ? 0 : it->second;
      if (best == nullptr || runs < best_running) {
        best = &job;
        best_running = runs;
        best_waiter = waiter;
      }
    }
    if (best == nullptr) return;
    AcquireCallback done = std::move(best_waiter->second.done);
    const std::string worker_id = best_waiter->second.worker_id;
    const std::string job_id = best->id;
    waiters_.erase(best_waiter);
    absl::StatusOr<Assignment> a = AssignLocked(job_id, worker_id, deferred);
    if (!a.ok()) {
      deferred.calls.push_back([done, s = a.status()] { done(s); });
      return;
    }
    deferred.calls.push_back(
        [done, a = *std::move(a)]() mutable { done(std::optional<Assignment>(std::move(a))); });
  }
}

std::map<std::string, int64_t> Scheduler::RunningByTenantLocked() const {
  std::map<std::string, int64_t> running;
  for (const auto& [id, j] : active_) {
    if (j.state == JobState::kRunning) ++running[j.tenant];
  }
  return running;
}

bool Scheduler::AtRunningLimit(const Job& job,
                               const std::map<std::string, int64_t>& running) const {
  if (!options_.quota) return false;
  const int64_t limit = options_.quota(job.tenant).running_jobs;
  auto it = running.find(job.tenant);
  return limit > 0 && it != running.end() && it->second >= limit;
}

SchedulerStats Scheduler::Stats() {
  SchedulerStats stats;
  if (absl::StatusOr<std::map<JobState, int64_t>> counts = store_->CountJobsByState(); counts.ok()) {
    stats.jobs = *std::move(counts);
  }
  MutexLock lock(&mu_);
  stats.queued = static_cast<int64_t>(queue_.size());
  int64_t oldest_ms = 0;
  std::map<std::string, const Job*> running;  // by worker
  for (const auto& [id, job] : active_) {
    if (job.state == JobState::kQueued && (oldest_ms == 0 || job.create_time_ms < oldest_ms)) {
      oldest_ms = job.create_time_ms;
    }
    if (job.state == JobState::kRunning) running[job.worker] = &job;
  }
  if (oldest_ms > 0) stats.oldest_queued_seconds = (NowMs() - oldest_ms) / 1000.0;
  std::set<std::string> waiting;
  for (const auto& [ticket, waiter] : waiters_) waiting.insert(waiter.worker_id);
  for (const auto& [id, info] : workers_) {
    SchedulerStats::Worker w;
    w.id = id;
    w.name = info.display_name;
    w.device = info.device;
    w.state = "away";
    w.memory_bytes = info.memory_bytes;
    w.engine_version = info.engine_version;
    if (auto it = running.find(id); it != running.end()) {
      w.state = "busy";
      w.job = it->second->id;
      w.job_tenant = it->second->tenant;
      w.tokens_per_second = it->second->progress.tokens_per_second;
    } else if (waiting.count(id)) {
      w.state = "waiting";
    }
    stats.workers.push_back(std::move(w));
  }
  return stats;
}

absl::StatusOr<Assignment> Scheduler::AssignLocked(const std::string& job_id,
                                                   const std::string& worker_id,
                                                   Deferred& deferred) {
  Job& job = active_.at(job_id);
  Job before = job;
  job.attempt += 1;
  job.worker = worker_id;
  job.lease = NewId() + NewId();
  job.cancel_requested = false;
  job.pause_requested = false;
  job.last_report_sequence = 0;  // the new attempt numbers its events from 1
  if (job.start_time_ms == 0) job.start_time_ms = NowMs();
  // "attempt 2 of 3" while every earlier attempt failed; after hand-backs,
  // which do not count, the failures are what is counted.
  const std::string attempt =
      job.attempt - 1 == job.failures
          ? absl::StrCat("attempt ", job.attempt, " of ", job.max_attempts)
          : absl::StrCat("attempt ", job.attempt, " (", job.failures, " of ", job.max_attempts,
                         " allowed failures so far)");
  absl::Status s = TransitionLocked(
      job, JobState::kRunning,
      absl::StrCat(attempt, " on worker ", worker_id, " (", workers_[worker_id].display_name, ")",
                   job.checkpoint_name.empty() ? "" : ", resuming from " + job.checkpoint_name),
      deferred);
  if (!s.ok()) {
    job = std::move(before);
    return s;
  }
  queue_.erase(KeyOf(job));
  const int64_t deadline = NowMs() + absl::ToInt64Milliseconds(options_.lease_duration);
  lease_deadline_ms_[job.id] = deadline;
  steps_[job.id] = StepSeen{-1, NowMs()};

  Assignment a;
  a.job = job;
  a.lease_deadline_ms = deadline;
  if (const Preset* p = FindPreset(job.spec.base_model)) {
    a.base_model = PresetRecord(*p);
  } else {
    absl::StatusOr<ModelRecord> m = store_->GetModel(job.spec.base_model);
    if (!m.ok()) return m.status();
    a.base_model = *std::move(m);
  }
  absl::StatusOr<DatasetRecord> train = store_->GetDataset(job.spec.training_dataset);
  if (!train.ok()) return train.status();
  a.training = *std::move(train);
  if (!job.spec.validation_dataset.empty()) {
    absl::StatusOr<DatasetRecord> val = store_->GetDataset(job.spec.validation_dataset);
    if (!val.ok()) return val.status();
    a.validation = *std::move(val);
  }
  return a;
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

uint64_t Scheduler::Subscribe(const std::string& job_id, Listener listener) {
  MutexLock lock(&mu_);
  const uint64_t id = next_ticket_++;
  listeners_[id] = {job_id, std::move(listener)};
  return id;
}

void Scheduler::Unsubscribe(uint64_t id) {
  MutexLock lock(&mu_);
  listeners_.erase(id);
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
