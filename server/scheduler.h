// The scheduler's core: the job queue, worker leases and job events, with no
// RPC types. The gRPC services (server/*_service.cc) are thin layers over it.
//
// Lifecycle: CreateJob queues a job; AcquireJob hands the best queued job to a
// long-polling worker under a lease (a fencing token plus a deadline);
// Heartbeat renews the lease, tracks step progress and carries cancellation
// and pause requests back to the worker; ReportEvent appends training events;
// AddArtifact records uploaded files, among them checkpoints, the newest
// complete one of which the next attempt resumes from on any worker;
// FinishJob ends the job, ReleaseJob hands it back unfinished (a worker
// stopping, or pausing it). A lease that expires, or a worker that makes no
// step progress for stall_timeout, fails the attempt: the job is queued again
// or, after max_attempts failures, FAILED with every attempt's reason. Every
// change is committed to the Store before the call returns.
//
// Watchers subscribe to a job and are told when it has new events; they read
// the events themselves (ListEvents) at their own pace, so a slow watcher
// never holds up training or other watchers. Listeners run on a notifier
// thread of their own, not on the thread that committed the event, and the
// newest events of active jobs are kept in memory, so following a job live
// reads no disk however many watch it.
//
// The methods live by concept: jobs and their commits in scheduler.cc, workers
// and the queue's order in placement.cc, attempts, leases and the reaper in
// leases.cc; watchers in the EventHub (event_hub.h).
//
// Thread-safe: every public method may be called from any thread. Callbacks
// (AcquireJob's `done`, subscription listeners) run without internal locks held.
#ifndef TUNEFORGE_SERVER_SCHEDULER_H_
#define TUNEFORGE_SERVER_SCHEDULER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"
#include "server/event_hub.h"
#include "server/ids.h"
#include "server/records.h"
#include "server/store.h"
#include "server/tenancy.h"

namespace tuneforge {

struct SchedulerOptions {
  absl::Duration lease_duration = absl::Seconds(30);  // several heartbeats
  absl::Duration heartbeat_interval = absl::Seconds(2);
  int max_attempts = 3;
  absl::Duration reaper_period = absl::Milliseconds(500);
  // A running job whose heartbeats report no new step for this long is
  // STALLED: the attempt fails and the job restarts from its checkpoint.
  // Zero: never.
  absl::Duration stall_timeout = absl::ZeroDuration();
  // Called without locks held with the digests of blobs the scheduler no
  // longer references (superseded checkpoints, those of ended jobs); the
  // server removes the ones nothing else references.
  std::function<void(const std::vector<std::string>&)> release_blobs;
  // Each tenant's limits on queued and running jobs (the other fields of
  // Quota are the catalogues'). Unset: no limits.
  QuotaFn quota;
  // Every time the scheduler reads: leases, stalls, long polls, event and
  // job times. Tests pass a ManualClock.
  const Clock* clock = &Clock::System();
  // Job ids and lease tokens. Tests may pass a counter.
  IdSource new_id = NewId;
};

struct WorkerInfo {
  std::string display_name;  // e.g. "worker-0@host"
  std::string device;        // "cpu" or "cuda"
  int64_t memory_bytes = 0;
  std::string engine_version;
};

// What the scheduler holds now, for monitoring (server/metrics.h).
struct SchedulerStats {
  std::map<JobState, int64_t> jobs;  // every stored job by state
  int64_t queued = 0;                // QUEUED, waiting for a worker
  double oldest_queued_seconds = 0;  // 0 when none waits
  struct Worker {
    std::string id;
    std::string name;
    std::string device;
    std::string state;  // "busy" (running a job), "waiting" (polling for one), "away"
    int64_t memory_bytes = 0;
    std::string engine_version;
    std::string job;          // its running job's id, while busy
    std::string job_tenant;   // and whose job that is
    double tokens_per_second = 0;  // of its running job, as last reported
  };
  std::vector<Worker> workers;
};

// A job handed to a worker.
struct Assignment {
  Job job;
  ModelRecord base_model;  // a preset's record (no files) or a stored model's
  DatasetRecord training;
  std::optional<DatasetRecord> validation;  // none: split the training set
  int64_t lease_deadline_ms = 0;
};

struct HeartbeatReply {
  bool cancel_requested = false;
  bool pause_requested = false;
  int64_t lease_deadline_ms = 0;
  int64_t last_report_sequence = 0;  // the worker may forget its events up to this one
};

class Scheduler {
 public:
  using AcquireCallback = std::function<void(absl::StatusOr<std::optional<Assignment>>)>;
  using Listener = EventHub::Listener;

  // Loads active jobs from `store`; running ones get a fresh lease so their
  // workers can reconnect. Starts the lease reaper.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Store* store,
                                                           SchedulerOptions options);
  ~Scheduler();

  // Jobs. Those taking a Scope act only on jobs, datasets and models the
  // scope sees; anything else is NOT_FOUND like a missing one.
  // `spec` must name existing READY datasets; errors say which field is wrong.
  // Idempotent on spec.request_id within the tenant: a retry returns the
  // first job. The job belongs to scope.tenant; RESOURCE_EXHAUSTED when that
  // tenant has its quota of queued jobs.
  absl::StatusOr<Job> CreateJob(JobSpec spec, const Scope& scope = {});
  absl::StatusOr<Job> GetJob(const std::string& id);
  absl::StatusOr<Job> GetJob(const std::string& id, const Scope& scope);
  absl::StatusOr<std::vector<Job>> ListJobs(const JobFilter& filter, const std::string& after_id,
                                            int limit);
  // QUEUED jobs end at once; RUNNING ones when their worker has stopped
  // (within a heartbeat). A finished job: FAILED_PRECONDITION.
  absl::StatusOr<Job> CancelJob(const std::string& id, const Scope& scope = {});
  // QUEUED jobs pause at once; RUNNING ones once their worker has uploaded a
  // checkpoint and handed the job back. PAUSED: no change.
  absl::StatusOr<Job> PauseJob(const std::string& id, const Scope& scope = {});
  // PAUSED jobs are queued again (a pause still pending is called off).
  absl::StatusOr<Job> ResumeJob(const std::string& id, const Scope& scope = {});
  absl::StatusOr<std::vector<Event>> ListEvents(const std::string& job_id,
                                                int64_t after_sequence, int limit);

  // Workers.
  std::string RegisterWorker(const WorkerInfo& info);
  // Calls `done` exactly once: with an assignment as soon as a job is free,
  // with nullopt after `wait`, or with an error. Returns a ticket for
  // CancelAcquire (when the caller goes away first).
  uint64_t AcquireJob(const std::string& worker_id, absl::Duration wait, AcquireCallback done);
  void CancelAcquire(uint64_t ticket);
  // Stale `lease`: ABORTED (the job was given to someone else).
  absl::StatusOr<HeartbeatReply> Heartbeat(const std::string& worker_id,
                                           const std::string& job_id, const std::string& lease,
                                           int64_t step);
  // `report_sequence`: the attempt's own number for the event (1, 2, ...);
  // one at or below the last committed is a resend and is dropped (OK);
  // 0: not numbered. FAILED_PRECONDITION when it skips numbers.
  absl::Status ReportEvent(const std::string& job_id, const std::string& lease, Event event,
                           int64_t report_sequence = 0);
  // Records a file the attempt produced (replacing one of the same path).
  absl::Status AddArtifact(const std::string& job_id, const std::string& lease,
                           const FileRecord& artifact);
  // The job, if `lease` is its current one; ABORTED otherwise.
  absl::StatusOr<Job> LeasedJob(const std::string& job_id, const std::string& lease);
  // `result_model`: for SUCCEEDED, the id of the model the job produced, if any.
  absl::Status FinishJob(const std::string& job_id, const std::string& lease, JobState state,
                         const std::string& error, const std::string& result_model = "");
  // The worker gives the job back unfinished: QUEUED again (PAUSED if a pause
  // was asked, CANCELLED if a cancellation was), not counted as a failure.
  absl::Status ReleaseJob(const std::string& job_id, const std::string& lease,
                          const std::string& reason);

  // Watching. `listener` is called after new events of the job (once for
  // several that come together), on the notifier thread, without locks held.
  uint64_t Subscribe(const std::string& job_id, Listener listener);
  void Unsubscribe(uint64_t id);

  SchedulerStats Stats();

  // Expires leases and long-polls now (the reaper thread calls it too).
  void ReapExpired();

 private:
  struct Waiter {
    std::string worker_id;
    absl::Time deadline;
    AcquireCallback done;
  };
  // Queue order: higher priority first, then earlier submission.
  using QueueKey = std::tuple<int, int64_t, int64_t, std::string>;  // (-priority, ms, seq, id)
  // Callbacks collected under the lock and run after it is released: declare
  // a Deferred before the MutexLock so it is destroyed after the unlock.
  struct Deferred {
    std::vector<std::function<void()>> calls;
    ~Deferred() {
      for (auto& call : calls) call();
    }
  };

  Scheduler(Store* store, SchedulerOptions options);
  // The time on options_.clock (the free NowMs() is the system's).
  int64_t NowMs() const { return options_.clock->NowMs(); }
  // Within kMinPriority..kMaxPriority (INVALID_ARGUMENT) and, unless the
  // scope is an admin's, the tenant's band (PERMISSION_DENIED).
  absl::Status CheckPriority(int priority, const Scope& scope) const;
  static QueueKey KeyOf(const Job& job);
  // Appends an event to `job` (sequence, time) and commits both.
  absl::Status CommitLocked(Job& job, std::vector<Event> events, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status TransitionLocked(Job& job, JobState to, const std::string& reason,
                                Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands queued jobs to waiting workers.
  void MatchLocked(Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Assignment> AssignLocked(const std::string& job_id, const std::string& worker_id,
                                          Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Job*> LeasedJobLocked(const std::string& job_id, const std::string& lease)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The attempt failed (`why`): the job is queued again, paused, cancelled
  // or failed, and its lease is gone. When that cannot be committed, nothing
  // changes (the job keeps its lease, and the reaper tries again).
  absl::Status FailAttemptLocked(Job& job, const std::string& why, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status EndAttemptLocked(Job& job, const std::string& why, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands `digests` to options_.release_blobs once the lock is released.
  void ReleaseLater(std::vector<std::string> digests, Deferred& deferred) const;
  // Ends the lease and step tracking of a job that stops running.
  void ForgetLeaseLocked(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job, if not ended; NOT_FOUND, or FAILED_PRECONDITION saying there is
  // nothing to `verb` ("cancel").
  absl::StatusOr<Job*> ActiveJobLocked(const std::string& id, const char* verb,
                                       const Scope& scope) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Running jobs per tenant, and whether `job` must wait for its tenant's
  // running jobs to finish.
  std::map<std::string, int64_t> RunningByTenantLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AtRunningLimit(const Job& job, const std::map<std::string, int64_t>& running) const;
  // Whether the worker has the memory the job needs (or did not say).
  bool CanHoldLocked(const std::string& worker_id, const Job& job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills the output-only wait_reason and queue_position of a QUEUED or PAUSED job.
  void ExplainWaitLocked(Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes an ended job from memory (its events stay in the store).
  void EraseActiveLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReaperLoop();

  Store* const store_;
  const SchedulerOptions options_;

  Mutex mu_;
  std::map<std::string, Job> active_ ABSL_GUARDED_BY(mu_);  // not terminal
  std::set<QueueKey> queue_ ABSL_GUARDED_BY(mu_);
  int64_t last_submit_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> lease_deadline_ms_ ABSL_GUARDED_BY(mu_);  // by job id
  struct StepSeen {
    int64_t step = -1;
    int64_t since_ms = 0;  // when the job reached it (or its attempt started)
  };
  std::map<std::string, StepSeen> steps_ ABSL_GUARDED_BY(mu_);  // running jobs, by id
  // A running job with its lease, to put back when ending its attempt could
  // not be committed.
  struct LeaseSnapshot {
    Job job;
    std::optional<int64_t> deadline_ms;
    std::optional<StepSeen> step;
  };
  LeaseSnapshot SnapshotLeaseLocked(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RestoreLeaseLocked(Job& job, const LeaseSnapshot& snapshot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::map<std::string, WorkerInfo> workers_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);  // FIFO by ticket
  // The newest events of active jobs and their watchers; reset first on
  // destruction, so that no listener runs while the rest goes.
  std::unique_ptr<EventHub> events_ = std::make_unique<EventHub>();
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  std::mutex stop_mu_;  // the reaper's sleep, apart from mu_
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread reaper_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_SCHEDULER_H_
