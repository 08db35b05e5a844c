// WorkerService: the internal API that workers pull jobs through.
#include <fcntl.h>
#include <unistd.h>

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "server/convert.h"
#include "common/status_macros.h"
#include "server/grpc_status.h"
#include "common/model_config.h"
#include "common/sha256.h"
#include "server/artifacts.h"
#include "server/blob_stream.h"
#include "server/services.h"

namespace tuneforge {
namespace {

using google::protobuf::util::TimeUtil;

constexpr int kMaxWaitMs = 60'000;

void FillAssignment(const Assignment& a, const std::string& lease, v1::Assignment* out) {
  *out->mutable_job() = ToProto(a.job);
  out->set_lease(lease);
  *out->mutable_lease_deadline() = TimeUtil::MillisecondsToTimestamp(a.lease_deadline_ms);
  out->set_training_dataset_sha256(a.training.sha256);
  *out->mutable_training_dataset() = ToProto(a.training);
  if (a.validation) {
    out->set_validation_dataset_sha256(a.validation->sha256);
    *out->mutable_validation_dataset() = ToProto(*a.validation);
  }
  *out->mutable_base_model() = ToProto(a.base_model);
  if (!a.job.checkpoint_name.empty()) {
    out->set_resume_checkpoint(a.job.checkpoint_name);
    for (const FileRecord& f : a.job.checkpoint) {
      v1::ModelFile* file = out->add_resume_checkpoint_files();
      file->set_path(f.path);
      file->set_sha256(f.sha256);
      file->set_size_bytes(f.size_bytes);
    }
  }
}

// Whether `path` names a file of checkpoint folder "step-NNNNNNNN" (the
// engine's names: a model or adapter folder, optimizer and trainer state),
// or the job's metrics so far, which travel with it.
// "tensorboard/events.out.tfevents.{seconds}.{host}", a plain name.
bool IsTensorBoardFile(const std::string& path) {
  constexpr std::string_view kPrefix = "tensorboard/events.out.tfevents.";
  if (path.size() <= kPrefix.size() || path.size() > 200 || path.compare(0, kPrefix.size(), kPrefix) != 0) {
    return false;
  }
  return std::all_of(path.begin() + kPrefix.size(), path.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

bool IsCheckpointFile(const std::string& path) {
  if (path.rfind("checkpoint/step-", 0) != 0) return false;
  const size_t slash = path.find('/', 11);
  if (slash != 24) return false;  // "checkpoint/" + "step-" + 8 digits
  for (size_t i = 16; i < slash; ++i) {
    if (path[i] < '0' || path[i] > '9') return false;
  }
  const std::string file = path.substr(slash + 1);
  return IsModelFileName(file) || file == "adapter_config.json" ||
         file == "adapter_model.safetensors" || file == "optimizer.safetensors" ||
         file == "trainer_state.json" || file == "metrics.csv";
}

// A long poll: parks in the scheduler until a job is free, the wait ends, or
// the worker hangs up (then the scheduler forgets it, so no job is handed to
// a worker that is gone).
class AcquireReactor : public grpc::ServerUnaryReactor {
 public:
  AcquireReactor(Scheduler* scheduler, const v1::AcquireJobRequest* request,
                 v1::AcquireJobResponse* response)
      : scheduler_(scheduler), shared_(std::make_shared<Shared>()) {
    shared_->reactor = this;
    absl::StatusOr<std::string> worker = IdFromName(request->worker(), "workers", "worker");
    if (!worker.ok()) {
      Finish(ToGrpc(worker.status()));
      return;
    }
    const int wait_ms = std::clamp(request->wait_ms(), 0, kMaxWaitMs);
    // The callback may finish the call at once, and OnDone may then delete
    // this reactor on another thread: from here on touch only locals.
    std::shared_ptr<Shared> shared = shared_;
    Scheduler* sched = scheduler_;
    uint64_t ticket = sched->AcquireJob(
        *worker, absl::Milliseconds(wait_ms),
        [shared, response](absl::StatusOr<std::optional<Assignment>> result) {
          std::lock_guard<std::mutex> lock(shared->mu);
          if (shared->reactor == nullptr) return;
          if (result.ok() && result->has_value()) {
            FillAssignment(**result, (*result)->job.lease, response->mutable_assignment());
          }
          shared->reactor->Finish(ToGrpc(result.status()));
        });
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->ticket = ticket;
      cancelled = shared->cancelled;
    }
    if (cancelled && ticket != 0) sched->CancelAcquire(ticket);
  }

  void OnCancel() override {
    uint64_t ticket;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->cancelled = true;
      ticket = shared_->ticket;
    }
    if (ticket != 0) scheduler_->CancelAcquire(ticket);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->reactor = nullptr;
    }
    delete this;
  }

 private:
  struct Shared {
    std::mutex mu;
    AcquireReactor* reactor = nullptr;
    uint64_t ticket = 0;
    bool cancelled = false;
  };
  Scheduler* const scheduler_;
  std::shared_ptr<Shared> shared_;
};

class ReportReactor : public grpc::ServerReadReactor<v1::ReportEventsRequest> {
 public:
  ReportReactor(Guard guard, Scheduler* scheduler, v1::ReportEventsResponse* response)
      : guard_(std::move(guard)), scheduler_(scheduler), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    // A worker whose token is revoked is cut off mid-stream.
    absl::Status s = guard_.Recheck();
    if (s.ok()) s = Accept();
    if (!s.ok()) {
      Finish(ToGrpc(guard_.Done(request_.job(), s)));
      return;
    }
    response_->set_accepted(response_->accepted() + 1);
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Accept() {
    absl::StatusOr<std::string> job = IdFromName(request_.job(), "jobs", "job");
    if (!job.ok()) return job.status();
    absl::StatusOr<Event> event = EventFromProto(request_.event());
    if (!event.ok()) return event.status();
    return scheduler_->ReportEvent(*job, request_.lease(), *std::move(event),
                                   request_.report_sequence());
  }

  Guard guard_;
  Scheduler* const scheduler_;
  v1::ReportEventsResponse* response_;
  v1::ReportEventsRequest request_;
};

// One file a job produced: a header (checked against the job's lease and the
// model file names), then chunks into a blob; at the end the blob is
// published and recorded on the job.
class ArtifactReactor : public grpc::ServerReadReactor<v1::UploadArtifactRequest> {
 public:
  ArtifactReactor(Guard guard, Scheduler* scheduler, Store* store, BlobStore* blobs,
                  int64_t max_bytes)
      : guard_(std::move(guard)),
        scheduler_(scheduler),
        blobs_(blobs),
        artifacts_(scheduler, store, blobs),
        max_bytes_(max_bytes) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    // A worker whose token is revoked is cut off mid-stream, storing nothing.
    absl::Status s = guard_.Recheck();
    if (s.ok()) s = ok ? Consume() : Complete();
    if (s.ok() && already_held_) ok = false;  // recorded without the bytes: done
    if (!s.ok() || !ok) {
      writer_.reset();  // removes the temp file unless published
      Finish(ToGrpc(guard_.Done(absl::StrCat(header_.job(), " ", header_.artifact()), s)));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Consume() {
    if (!writer_) {
      if (!request_.has_header()) {
        return absl::InvalidArgumentError("the first message of an artifact must be its header");
      }
      header_ = request_.header();
      ASSIGN_OR_RETURN(job_, IdFromName(header_.job(), "jobs", "header.job"));
      const std::string& path = header_.artifact();
      const bool model_file = path.rfind("model/", 0) == 0 && IsModelFileName(path.substr(6));
      const bool other = path == "adapter/adapter_config.json" ||
                         path == "adapter/adapter_model.safetensors" || path == "metrics.csv" ||
                         path == "manifest.json" || IsCheckpointFile(path) ||
                         IsTensorBoardFile(path);
      if (!model_file && !other) {
        return absl::InvalidArgumentError(absl::StrCat(
            "header.artifact: '", path, "' is none of model/{a model file name}, "
            "adapter/adapter_config.json, adapter/adapter_model.safetensors, metrics.csv, "
            "manifest.json, checkpoint/step-NNNNNNNN/{a checkpoint file}, "
            "tensorboard/events.out.tfevents.{seconds}.{host}"));
      }
      RETURN_IF_ERROR(scheduler_->LeasedJob(job_, header_.lease()).status());
      // Bytes the server holds already (a tokenizer unchanged since the
      // last checkpoint, a model's config) are recorded without sending.
      ASSIGN_OR_RETURN(bool held,
                       artifacts_.RecordHeld(job_, header_.lease(),
                                             FileRecord{path, header_.sha256(), header_.size_bytes()}));
      if (held) {
        already_held_ = true;
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(writer_, blobs_->NewWriter());
      return absl::OkStatus();
    }
    if (!request_.has_chunk()) return absl::InvalidArgumentError("only one header per artifact");
    if (writer_->size() + static_cast<int64_t>(request_.chunk().size()) > max_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the artifact is larger than this server's limit of ", max_bytes_, " bytes"));
    }
    return writer_->Append(request_.chunk());
  }

  absl::Status Complete() {
    if (!writer_) return absl::InvalidArgumentError("the artifact stream was empty");
    if (header_.size_bytes() > 0 && writer_->size() != header_.size_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("received ", writer_->size(),
                                                     " bytes, the header said ",
                                                     header_.size_bytes()));
    }
    return artifacts_.Publish(job_, header_.lease(), header_.artifact(), *writer_,
                              header_.sha256());
  }

  Guard guard_;
  Scheduler* const scheduler_;
  BlobStore* const blobs_;
  JobArtifacts artifacts_;
  const int64_t max_bytes_;
  v1::UploadArtifactRequest request_;
  v1::UploadArtifactRequest::Header header_;
  std::string job_;
  std::unique_ptr<BlobWriter> writer_;
  bool already_held_ = false;  // the header named bytes the server holds: nothing to read
};

}  // namespace

grpc::ServerUnaryReactor* WorkerServiceImpl::RegisterWorker(
    grpc::CallbackServerContext* ctx, const v1::RegisterWorkerRequest* request,
    v1::RegisterWorkerResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "RegisterWorker");
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));

  if (absl::Status s = CheckText(request->display_name(), "display_name", 256); !s.ok()) {
    return FinishNow(ctx, guard.Done("", s));
  }
  std::string id = scheduler_->RegisterWorker(WorkerInfo{
      request->display_name(), request->device(), request->memory_bytes(),
      request->engine_version()});
  response->set_worker(absl::StrCat("workers/", id));
  response->set_heartbeat_interval_ms(
      static_cast<int32_t>(absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  return FinishNow(ctx, guard.Done(response->worker()));
}

grpc::ServerUnaryReactor* WorkerServiceImpl::AcquireJob(grpc::CallbackServerContext* ctx,
                                                        const v1::AcquireJobRequest* request,
                                                        v1::AcquireJobResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "AcquireJob", Guard::Audit::kRefusals);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request->worker()));

  return new AcquireReactor(scheduler_, request, response);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx,
                                                       const v1::HeartbeatRequest* request,
                                                       v1::HeartbeatResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "Heartbeat", Guard::Audit::kRefusals);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request->job()));
  auto beat = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::string worker, IdFromName(request->worker(), "workers", "worker"));
    ASSIGN_OR_RETURN(std::string job, IdFromName(request->job(), "jobs", "job"));
    ASSIGN_OR_RETURN(HeartbeatReply reply,
                     scheduler_->Heartbeat(worker, job, request->lease(), request->step()));
    response->set_cancel_requested(reply.cancel_requested);
    response->set_pause_requested(reply.pause_requested);
    *response->mutable_lease_deadline() =
        TimeUtil::MillisecondsToTimestamp(reply.lease_deadline_ms);
    response->set_last_report_sequence(reply.last_report_sequence);
    return absl::OkStatus();
  };
  return FinishNow(ctx, guard.Done(request->job(), beat()));
}

grpc::ServerReadReactor<v1::ReportEventsRequest>* WorkerServiceImpl::ReportEvents(
    grpc::CallbackServerContext* ctx, v1::ReportEventsResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "ReportEvents", Guard::Audit::kRefusals);
  if (!guard.ok()) return new FailedReader<v1::ReportEventsRequest>(guard.Done(""));

  return new ReportReactor(std::move(guard), scheduler_, response);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::FinishJob(grpc::CallbackServerContext* ctx,
                                                       const v1::FinishJobRequest* request,
                                                       v1::FinishJobResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "FinishJob");
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request->job()));
  auto finish = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::string job, IdFromName(request->job(), "jobs", "job"));
    if (request->error().size() > 4096) {
      return absl::InvalidArgumentError("error: at most 4096 bytes");
    }
    const JobState state = FromProto(request->state());
    if (state != JobState::kSucceeded) {
      return scheduler_->FinishJob(job, request->lease(), state, request->error());
    }
    // A job that uploaded a model folder succeeds with that model stored, or
    // fails saying why it could not be.
    ASSIGN_OR_RETURN(Job running, scheduler_->LeasedJob(job, request->lease()));
    std::string result_model;
    if (!running.artifacts.empty()) {
      absl::StatusOr<ModelRecord> m = models_->CreateFromJob(running);
      if (!m.ok()) {
        return scheduler_->FinishJob(job, request->lease(), JobState::kFailed,
                                     absl::StrCat("the trained model could not be stored: ",
                                                  m.status().message()));
      }
      result_model = m->id;
    }
    return scheduler_->FinishJob(job, request->lease(), state, request->error(), result_model);
  };
  return FinishNow(ctx, guard.Done(request->job(), finish()));
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReleaseJob(grpc::CallbackServerContext* ctx,
                                                        const v1::ReleaseJobRequest* request,
                                                        v1::ReleaseJobResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "ReleaseJob");
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request->job()));
  auto release = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::string job, IdFromName(request->job(), "jobs", "job"));
    if (request->reason().size() > 1024) {
      return absl::InvalidArgumentError("reason: at most 1024 bytes");
    }
    return scheduler_->ReleaseJob(job, request->lease(), request->reason());
  };
  return FinishNow(ctx, guard.Done(request->job(), release()));
}

grpc::ServerReadReactor<v1::UploadArtifactRequest>* WorkerServiceImpl::UploadArtifact(
    grpc::CallbackServerContext* ctx, v1::UploadArtifactResponse* response) {
  Guard guard(guards_, ctx, Api::kWorker, "UploadArtifact");
  if (!guard.ok()) return new FailedReader<v1::UploadArtifactRequest>(guard.Done(""));

  return new ArtifactReactor(std::move(guard), scheduler_, store_, blobs_, max_artifact_bytes_);
}

grpc::ServerWriteReactor<v1::BlobChunk>* WorkerServiceImpl::FetchBlob(
    grpc::CallbackServerContext* ctx, const v1::FetchBlobRequest* request) {
  Guard guard(guards_, ctx, Api::kWorker, "FetchBlob", Guard::Audit::kRefusals);
  const std::string resource = absl::StrCat(request->job(), " blob ", request->sha256());
  if (!guard.ok()) return new FailedStream<v1::BlobChunk>(guard.Done(resource));
  auto readable = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::string job, IdFromName(request->job(), "jobs", "job"));
    return JobArtifacts(scheduler_, store_, blobs_)
        .CheckReadable(job, request->lease(), request->sha256());
  };
  if (absl::Status s = guard.Done(resource, readable()); !s.ok()) {
    return new FailedStream<v1::BlobChunk>(s);
  }
  return new BlobStreamReactor<v1::BlobChunk>(std::move(guard), blobs_, request->sha256());
}

}  // namespace tuneforge
