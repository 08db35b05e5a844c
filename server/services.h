// The gRPC services of tuneforge.v1: thin layers that validate requests,
// convert them (server/convert.h), call the core (Scheduler, DatasetCatalog)
// and convert back. Built on gRPC's callback API: unary calls finish inline,
// streams are reactors, and nothing blocks a gRPC thread waiting for work.
//
// Every handler first checks its caller (server/auth.h): users and admins
// call the public services, workers the worker service, and a user sees only
// its tenant's datasets, models and jobs. Mutating calls are audited.
//
// Thread-safe: gRPC calls these from many threads; all state is in the core.
#ifndef TUNEFORGE_SERVER_SERVICES_H_
#define TUNEFORGE_SERVER_SERVICES_H_

#include <memory>
#include <mutex>
#include <vector>

#include "server/auth.h"
#include "server/datasets.h"
#include "server/grpc_status.h"
#include "server/models.h"
#include "server/scheduler.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/model.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge {

class DatasetServiceImpl final : public v1::DatasetService::CallbackService {
 public:
  DatasetServiceImpl(Guards guards, DatasetCatalog* catalog, ModelCatalog* models)
      : guards_(guards), catalog_(catalog), models_(models) {}

  grpc::ServerReadReactor<v1::UploadDatasetRequest>* UploadDataset(
      grpc::CallbackServerContext* ctx, v1::Dataset* response) override;
  grpc::ServerReadReactor<v1::UploadDatasetRequest>* ValidateDataset(
      grpc::CallbackServerContext* ctx, v1::ValidateDatasetResponse* response) override;
  grpc::ServerUnaryReactor* QueryUpload(grpc::CallbackServerContext* ctx,
                                        const v1::QueryUploadRequest* request,
                                        v1::QueryUploadResponse* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* ctx,
                                       const v1::GetDatasetRequest* request,
                                       v1::Dataset* response) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* ctx,
                                         const v1::ListDatasetsRequest* request,
                                         v1::ListDatasetsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteDatasetRequest* request,
                                          v1::DeleteDatasetResponse* response) override;

 private:
  const Guards guards_;
  DatasetCatalog* const catalog_;
  ModelCatalog* const models_;
};

class ModelServiceImpl final : public v1::ModelService::CallbackService {
 public:
  ModelServiceImpl(Guards guards, ModelCatalog* catalog) : guards_(guards), catalog_(catalog) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* ctx,
                                     const v1::GetModelRequest* request,
                                     v1::Model* response) override;
  grpc::ServerReadReactor<v1::ImportModelRequest>* ImportModel(
      grpc::CallbackServerContext* ctx, v1::Model* response) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext* ctx,
                                        const v1::DeleteModelRequest* request,
                                        v1::DeleteModelResponse* response) override;

 private:
  const Guards guards_;
  ModelCatalog* const catalog_;
};

class JobServiceImpl final : public v1::JobService::CallbackService {
 public:
  JobServiceImpl(Guards guards, Scheduler* scheduler, BlobStore* blobs)
      : guards_(guards), scheduler_(scheduler), blobs_(blobs) {}

  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* ctx,
                                      const v1::CreateJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* PauseJob(grpc::CallbackServerContext* ctx,
                                     const v1::PauseJobRequest* request,
                                     v1::Job* response) override;
  grpc::ServerUnaryReactor* ResumeJob(grpc::CallbackServerContext* ctx,
                                      const v1::ResumeJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* ctx,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* ListJobEvents(grpc::CallbackServerContext* ctx,
                                          const v1::ListJobEventsRequest* request,
                                          v1::ListJobEventsResponse* response) override;
  grpc::ServerUnaryReactor* ListCheckpoints(grpc::CallbackServerContext* ctx,
                                            const v1::ListCheckpointsRequest* request,
                                            v1::ListCheckpointsResponse* response) override;
  grpc::ServerWriteReactor<v1::ArtifactChunk>* DownloadArtifact(
      grpc::CallbackServerContext* ctx, const v1::DownloadArtifactRequest* request) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const v1::ListWorkersRequest* request,
                                        v1::ListWorkersResponse* response) override;

  // Ends every WatchJob stream with UNAVAILABLE, saying where to continue,
  // and refuses new ones: the server is shutting down.
  void Shutdown();
  // The tokens file changed: open WatchJob streams whose callers it no
  // longer admits end with UNAUTHENTICATED.
  void RecheckWatchers();

 private:
  const Guards guards_;
  Scheduler* const scheduler_;
  BlobStore* const blobs_;
  std::mutex watchers_mu_;
  bool shutting_down_ = false;                 // guarded by watchers_mu_
  std::vector<std::weak_ptr<void>> watchers_;  // their WatchReactor::Shared; guarded by watchers_mu_
};

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(Guards guards, Scheduler* scheduler, Store* store, BlobStore* blobs,
                    ModelCatalog* models, SchedulerOptions options, int64_t max_artifact_bytes)
      : guards_(guards),
        scheduler_(scheduler),
        store_(store),
        blobs_(blobs),
        models_(models),
        options_(options),
        max_artifact_bytes_(max_artifact_bytes) {}

  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* ctx,
                                           const v1::RegisterWorkerRequest* request,
                                           v1::RegisterWorkerResponse* response) override;
  grpc::ServerUnaryReactor* AcquireJob(grpc::CallbackServerContext* ctx,
                                       const v1::AcquireJobRequest* request,
                                       v1::AcquireJobResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerReadReactor<v1::ReportEventsRequest>* ReportEvents(
      grpc::CallbackServerContext* ctx, v1::ReportEventsResponse* response) override;
  grpc::ServerUnaryReactor* FinishJob(grpc::CallbackServerContext* ctx,
                                      const v1::FinishJobRequest* request,
                                      v1::FinishJobResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseJob(grpc::CallbackServerContext* ctx,
                                       const v1::ReleaseJobRequest* request,
                                       v1::ReleaseJobResponse* response) override;
  grpc::ServerWriteReactor<v1::BlobChunk>* FetchBlob(grpc::CallbackServerContext* ctx,
                                                     const v1::FetchBlobRequest* request) override;
  grpc::ServerReadReactor<v1::UploadArtifactRequest>* UploadArtifact(
      grpc::CallbackServerContext* ctx, v1::UploadArtifactResponse* response) override;

 private:
  const Guards guards_;
  Scheduler* const scheduler_;
  Store* const store_;  // its blob_refs_mu() orders artifact blobs against removals
  BlobStore* const blobs_;
  ModelCatalog* const models_;
  const SchedulerOptions options_;
  const int64_t max_artifact_bytes_;
};

// Streams that end at once with `status` (a refused caller, a bad request).
template <typename Request>
class FailedReader : public grpc::ServerReadReactor<Request> {
 public:
  explicit FailedReader(const absl::Status& status) { this->Finish(ToGrpc(status)); }
  void OnDone() override { delete this; }
};
template <typename Message>
class FailedStream : public grpc::ServerWriteReactor<Message> {
 public:
  explicit FailedStream(const absl::Status& status) { this->Finish(ToGrpc(status)); }
  void OnDone() override { delete this; }
};

// Finishes a unary call inline with `status`.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& status);

// Page tokens (AIP-158) are the id of the last item of the previous page.
// INVALID_ARGUMENT for a negative size; 0 is `default_size`; above
// `max_size` is coerced to it.
absl::StatusOr<int> PageSize(int requested, int default_size, int max_size);

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_SERVICES_H_
