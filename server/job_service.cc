// JobService: creating, reading, cancelling and watching fine-tuning jobs.
#include <algorithm>
#include <deque>
#include <mutex>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/numbers.h"
#include "server/blob_stream.h"
#include "server/convert.h"
#include "server/grpc_status.h"
#include "server/services.h"

namespace tuneforge {
namespace {

// Streams a job's events: first those after `after_sequence`, then each new
// one as it is committed, and finishes once the job has ended and its last
// event was sent. Reads from the store at the client's pace, at most
// kBatch events ahead, so a slow watcher holds no more than that in memory
// and never slows down the job.
class WatchReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  static constexpr int kBatch = 64;

  struct Shared {
    std::recursive_mutex mu;  // reactions may arrive while Pump() runs
    WatchReactor* reactor = nullptr;
  };

  WatchReactor(Guard guard, Scheduler* scheduler, std::string job_id, int64_t after_sequence,
               std::shared_ptr<Shared> shared)
      : guard_(std::move(guard)),
        scheduler_(scheduler),
        job_id_(std::move(job_id)),
        fetched_after_(after_sequence),
        shared_(std::move(shared)) {
    shared_->reactor = this;
    subscription_ = scheduler_->Subscribe(job_id_, [shared = shared_] {
      std::lock_guard<std::recursive_mutex> lock(shared->mu);
      if (shared->reactor != nullptr) shared->reactor->Recheck();
    });
    std::lock_guard<std::recursive_mutex> lock(shared_->mu);
    Pump();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(shared_->mu);
    writing_ = false;
    if (!ok) {
      Done(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream broke; watch again"));
      return;
    }
    if (stopping_) {
      Stop();
      return;
    }
    Pump();
  }

  // The server is shutting down: ends the stream, once the event being
  // written is out, with a status that says where to continue. Called with
  // shared_->mu held.
  void Stop() {
    stopping_ = true;
    if (writing_) return;  // OnWriteDone comes back here
    Done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      absl::StrCat("the server is shutting down; watch again with "
                                   "after_sequence=", sent_through_, " to continue")));
  }

  // The tokens file changed: ends the stream if its caller is no longer
  // admitted. Called with shared_->mu held.
  void Recheck() { Pump(); }

  void OnCancel() override {
    std::lock_guard<std::recursive_mutex> lock(shared_->mu);
    if (!writing_) Done(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    {
      std::lock_guard<std::recursive_mutex> lock(shared_->mu);
      shared_->reactor = nullptr;
    }
    scheduler_->Unsubscribe(subscription_);
    delete this;
  }

 private:
  // Sends what is next, if nothing is being written; ends the stream once
  // the caller's token is revoked. Called with shared_->mu held, on each
  // new event and when the tokens file changes.
  void Pump() {
    if (writing_ || finished_) return;
    if (absl::Status s = guard_.Recheck(); !s.ok()) {
      Done(ToGrpc(s));
      return;
    }
    if (pending_.empty()) {
      absl::StatusOr<std::vector<Event>> events =
          scheduler_->ListEvents(job_id_, fetched_after_, kBatch);
      if (!events.ok()) {
        Done(ToGrpc(events.status()));
        return;
      }
      for (const Event& e : *events) {
        pending_.push_back(ToProto(e));
        fetched_after_ = e.sequence;
      }
    }
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      sent_through_ = current_.sequence();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    absl::StatusOr<Job> job = scheduler_->GetJob(job_id_);
    if (!job.ok()) {
      Done(ToGrpc(job.status()));
    } else if (IsTerminal(job->state) && job->last_sequence <= fetched_after_) {
      Done(grpc::Status::OK);
    }
  }

  void Done(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  Guard guard_;
  Scheduler* const scheduler_;
  const std::string job_id_;
  int64_t fetched_after_;
  std::shared_ptr<Shared> shared_;
  uint64_t subscription_ = 0;
  std::deque<v1::JobEvent> pending_;
  v1::JobEvent current_;
  int64_t sent_through_ = 0;  // the sequence of the last event written
  bool writing_ = false;
  bool finished_ = false;
  bool stopping_ = false;
};

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::CreateJob(grpc::CallbackServerContext* ctx,
                                                    const v1::CreateJobRequest* request,
                                                    v1::Job* response) {
  Guard guard(guards_, ctx, Api::kPublic, "CreateJob");
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<JobSpec> spec = JobSpecFromProto(request->job());
  if (!spec.ok()) return FinishNow(ctx, guard.Done("", spec.status()));
  absl::StatusOr<Job> job = scheduler_->CreateJob(*std::move(spec), guard.scope());
  if (job.ok()) *response = ToProto(*job);
  return FinishNow(ctx, guard.Done(response->name(), job.status()));
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx,
                                                 const v1::GetJobRequest* request,
                                                 v1::Job* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "jobs", "name");
  if (!id.ok()) return FinishNow(ctx, id.status());
  absl::StatusOr<Job> job = scheduler_->GetJob(*id, guard.scope());
  if (job.ok()) *response = ToProto(*job);
  return FinishNow(ctx, job.status());
}

using google::protobuf::util::TimeUtil;

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* ctx,
                                                   const v1::ListJobsRequest* request,
                                                   v1::ListJobsResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  JobFilter filter;
  filter.tenant = guard.scope().ListFilter();
  if (request->state() != v1::JOB_STATE_UNSPECIFIED) filter.state = FromProto(request->state());
  if (!request->label().empty()) {
    size_t eq = request->label().find('=');
    if (eq == std::string::npos) {
      return FinishNow(ctx, absl::InvalidArgumentError("label: expected key=value"));
    }
    filter.label_key = request->label().substr(0, eq);
    filter.label_value = request->label().substr(eq + 1);
    if (!IdFromName(filter.label_key, "labels", "label").ok()) {
      return FinishNow(ctx, absl::InvalidArgumentError("label: key must be of [a-z0-9-]"));
    }
  }
  if (request->has_create_time_after()) {
    filter.created_after_ms = TimeUtil::TimestampToMilliseconds(request->create_time_after());
  }
  if (request->has_create_time_before()) {
    filter.created_before_ms = TimeUtil::TimestampToMilliseconds(request->create_time_before());
  }
  absl::StatusOr<int> size = PageSize(request->page_size(), 50, 1000);
  if (!size.ok()) return FinishNow(ctx, size.status());
  // The token is bound to every filter: a page of another query is refused.
  const std::string query = absl::StrCat(
      "jobs|", filter.tenant, "|", filter.state ? static_cast<int>(*filter.state) : -1, "|",
      request->label(), "|", filter.created_after_ms, "|", filter.created_before_ms);
  absl::StatusOr<std::string> after =
      guards_.pages->Read(request->page_token(), guard.scope().tenant, query);
  if (!after.ok()) return FinishNow(ctx, after.status());
  absl::StatusOr<std::vector<Job>> jobs = scheduler_->ListJobs(filter, *after, *size);
  if (!jobs.ok()) return FinishNow(ctx, jobs.status());
  for (const Job& job : *jobs) *response->add_jobs() = ToProto(job);
  if (static_cast<int>(jobs->size()) == *size) {
    response->set_next_page_token(guards_.pages->Make(guard.scope().tenant, query, jobs->back().id));
  }
  return FinishNow(ctx, absl::OkStatus());
}

namespace {

// Cancel, pause or resume the job a request names; the job as it is then.
template <typename Request>
grpc::ServerUnaryReactor* JobAction(grpc::CallbackServerContext* ctx, Guard guard,
                                    const Request& request, v1::Job* response,
                                    Scheduler* scheduler,
                                    absl::StatusOr<Job> (Scheduler::*action)(const std::string&,
                                                                             const Scope&)) {
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request.name()));
  absl::StatusOr<std::string> id = IdFromName(request.name(), "jobs", "name");
  if (!id.ok()) return FinishNow(ctx, guard.Done(request.name(), id.status()));
  absl::StatusOr<Job> job = (scheduler->*action)(*id, guard.scope());
  if (job.ok()) *response = ToProto(*job);
  return FinishNow(ctx, guard.Done(request.name(), job.status()));
}

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx,
                                                    const v1::CancelJobRequest* request,
                                                    v1::Job* response) {
  return JobAction(ctx, Guard(guards_, ctx, Api::kPublic, "CancelJob"), *request, response,
                   scheduler_, &Scheduler::CancelJob);
}

grpc::ServerUnaryReactor* JobServiceImpl::PauseJob(grpc::CallbackServerContext* ctx,
                                                   const v1::PauseJobRequest* request,
                                                   v1::Job* response) {
  return JobAction(ctx, Guard(guards_, ctx, Api::kPublic, "PauseJob"), *request, response,
                   scheduler_, &Scheduler::PauseJob);
}

grpc::ServerUnaryReactor* JobServiceImpl::ResumeJob(grpc::CallbackServerContext* ctx,
                                                    const v1::ResumeJobRequest* request,
                                                    v1::Job* response) {
  return JobAction(ctx, Guard(guards_, ctx, Api::kPublic, "ResumeJob"), *request, response,
                   scheduler_, &Scheduler::ResumeJob);
}

grpc::ServerWriteReactor<v1::JobEvent>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* ctx, const v1::WatchJobRequest* request) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return new FailedStream<v1::JobEvent>(guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "jobs", "name");
  absl::Status status = id.status();
  if (status.ok()) status = scheduler_->GetJob(*id, guard.scope()).status();
  auto shared = std::make_shared<WatchReactor::Shared>();
  if (status.ok()) {
    std::lock_guard<std::mutex> lock(watchers_mu_);
    if (shutting_down_) {
      status = absl::UnavailableError("the server is shutting down; watch again shortly");
    } else {
      // Forget the watchers that have ended.
      watchers_.erase(std::remove_if(watchers_.begin(), watchers_.end(),
                                     [](const std::weak_ptr<void>& w) { return w.expired(); }),
                      watchers_.end());
      watchers_.push_back(shared);
    }
  }
  if (!status.ok()) return new FailedStream<v1::JobEvent>(status);
  return new WatchReactor(std::move(guard), scheduler_, *id, request->after_sequence(),
                          std::move(shared));
}

grpc::ServerUnaryReactor* JobServiceImpl::ListCheckpoints(grpc::CallbackServerContext* ctx,
                                                          const v1::ListCheckpointsRequest* request,
                                                          v1::ListCheckpointsResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "jobs", "name");
  if (!id.ok()) return FinishNow(ctx, id.status());
  absl::StatusOr<Job> job = scheduler_->GetJob(*id, guard.scope());
  if (!job.ok()) return FinishNow(ctx, job.status());
  // From the job's events, a page at a time.
  int64_t after = 0;
  while (true) {
    absl::StatusOr<std::vector<Event>> events = scheduler_->ListEvents(*id, after, 1000);
    if (!events.ok()) return FinishNow(ctx, events.status());
    for (const Event& e : *events) {
      after = e.sequence;
      if (!std::holds_alternative<CheckpointEvent>(e.payload)) continue;
      v1::Checkpoint* c = response->add_checkpoints();
      *c = ToProto(e).checkpoint();
      c->set_held(std::get<CheckpointEvent>(e.payload).name == job->checkpoint_name);
    }
    if (events->size() < 1000) break;
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<v1::ArtifactChunk>* JobServiceImpl::DownloadArtifact(
    grpc::CallbackServerContext* ctx, const v1::DownloadArtifactRequest* request) {
  using Failed = FailedStream<v1::ArtifactChunk>;
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return new Failed(guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "jobs", "name");
  if (!id.ok()) return new Failed(id.status());
  absl::StatusOr<Job> job = scheduler_->GetJob(*id, guard.scope());
  if (!job.ok()) return new Failed(job.status());
  for (const FileRecord& f : job->artifacts) {
    if (f.path == request->artifact()) {
      return new BlobStreamReactor<v1::ArtifactChunk>(std::move(guard), blobs_, f.sha256);
    }
  }
  return new Failed(absl::NotFoundError(absl::StrCat(
      "artifact: job ", *id, " has no artifact '", request->artifact(),
      "'; its artifacts are listed in the job (GetJob)")));
}

grpc::ServerUnaryReactor* JobServiceImpl::ListWorkers(grpc::CallbackServerContext* ctx,
                                                      const v1::ListWorkersRequest* request,
                                                      v1::ListWorkersResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  for (const SchedulerStats::Worker& w : scheduler_->Stats().workers) {
    v1::Worker* out = response->add_workers();
    out->set_name(absl::StrCat("workers/", w.id));
    out->set_display_name(w.name);
    out->set_device(w.device);
    out->set_memory_bytes(w.memory_bytes);
    out->set_engine_version(w.engine_version);
    out->set_state(w.state);
    if (!w.job.empty() && guard.scope().Sees(w.job_tenant)) {
      out->set_job(absl::StrCat("jobs/", w.job));
      out->set_tokens_per_second(w.tokens_per_second);
    } else if (!guard.scope().all_tenants && w.state != "waiting") {
      // A worker busy with another tenant's job looks like one that is
      // away: nothing tells a tenant that another is training.
      out->set_state("unavailable");
    }
  }
  return FinishNow(ctx, absl::OkStatus());
}

namespace {

// Calls `action` on each of `watchers` still streaming, under its lock.
void EachWatcher(const std::vector<std::weak_ptr<void>>& watchers,
                 void (WatchReactor::*action)()) {
  for (const std::weak_ptr<void>& w : watchers) {
    auto shared = std::static_pointer_cast<WatchReactor::Shared>(w.lock());
    if (!shared) continue;
    std::lock_guard<std::recursive_mutex> lock(shared->mu);
    if (shared->reactor != nullptr) (shared->reactor->*action)();
  }
}

}  // namespace

void JobServiceImpl::Shutdown() {
  std::vector<std::weak_ptr<void>> watchers;
  {
    std::lock_guard<std::mutex> lock(watchers_mu_);
    shutting_down_ = true;
    watchers.swap(watchers_);
  }
  EachWatcher(watchers, &WatchReactor::Stop);
}

void JobServiceImpl::RecheckWatchers() {
  std::vector<std::weak_ptr<void>> watchers;
  {
    std::lock_guard<std::mutex> lock(watchers_mu_);
    watchers = watchers_;
  }
  EachWatcher(watchers, &WatchReactor::Recheck);
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobEvents(grpc::CallbackServerContext* ctx,
                                                        const v1::ListJobEventsRequest* request,
                                                        v1::ListJobEventsResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "jobs", "name");
  if (!id.ok()) return FinishNow(ctx, id.status());
  absl::Status exists = scheduler_->GetJob(*id, guard.scope()).status();
  if (!exists.ok()) return FinishNow(ctx, exists);
  int64_t after = request->after_sequence();
  const std::string query = "events|" + *id;
  if (!request->page_token().empty()) {
    absl::StatusOr<std::string> position =
        guards_.pages->Read(request->page_token(), guard.scope().tenant, query);
    if (!position.ok()) return FinishNow(ctx, position.status());
    if (!absl::SimpleAtoi(*position, &after)) {
      return FinishNow(ctx, absl::InvalidArgumentError("page_token: not a token from this API"));
    }
  }
  absl::StatusOr<int> size = PageSize(request->page_size(), 100, 1000);
  if (!size.ok()) return FinishNow(ctx, size.status());
  absl::StatusOr<std::vector<Event>> events = scheduler_->ListEvents(*id, after, *size);
  if (!events.ok()) return FinishNow(ctx, events.status());
  for (const Event& e : *events) *response->add_events() = ToProto(e);
  if (static_cast<int>(events->size()) == *size) {
    response->set_next_page_token(guards_.pages->Make(
        guard.scope().tenant, query, std::to_string(events->back().sequence)));
  }
  return FinishNow(ctx, absl::OkStatus());
}

}  // namespace tuneforge
