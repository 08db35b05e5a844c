// The scheduler's placement: registering workers, long polls for work, which
// queued job goes to which waiting worker (priority, tenants taking turns,
// running-job limits, memory), and why a job waits.
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

std::string Scheduler::RegisterWorker(const WorkerInfo& info) {
  std::string id = options_.new_id();
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
  job.lease = options_.new_id();
  job.lease += options_.new_id();  // two ids, in order
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

}  // namespace tuneforge
