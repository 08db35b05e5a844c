// The CLI's client of the Tuneforge API: the dataset, model and job service
// stubs over one channel, a method per RPC, and how a failed call becomes a
// message on standard error and the CLI's exit code. Printing results is the
// commands' business; this file only talks to the server.
#ifndef TUNEFORGE_CLIENT_API_CLIENT_H_
#define TUNEFORGE_CLIENT_API_CLIENT_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/model.grpc.pb.h"

namespace tuneforge::cli {

// The deadline of a unary call; streams choose their own.
inline constexpr std::chrono::seconds kCallTimeout{30};

// 0 for OK; 3 server unavailable (or too slow); 4 not found (or not allowed
// to see it); 2 invalid argument; 1 anything else.
int ExitCode(const grpc::Status& s);
// Prints "tuneforge: error: ..." (or "server unavailable") on standard error
// and returns ExitCode(s).
int ReportFailure(const grpc::Status& s);
// A context whose deadline is `timeout` from now.
std::unique_ptr<grpc::ClientContext> CallContext(std::chrono::seconds timeout = kCallTimeout);

class ApiClient {
 public:
  explicit ApiClient(std::shared_ptr<grpc::Channel> channel);

  // Unary RPCs: each returns 0, or the exit code of its failure, which it
  // has already reported on standard error.
  int GetDataset(const v1::GetDatasetRequest& req, v1::Dataset* resp);
  int ListDatasets(const v1::ListDatasetsRequest& req, v1::ListDatasetsResponse* resp);
  int DeleteDataset(const v1::DeleteDatasetRequest& req, v1::DeleteDatasetResponse* resp);
  // Quiet on failure: an upload the server does not know simply starts at
  // byte 0.
  int QueryUpload(const v1::QueryUploadRequest& req, v1::QueryUploadResponse* resp);
  int ListModels(const v1::ListModelsRequest& req, v1::ListModelsResponse* resp);
  int GetModel(const v1::GetModelRequest& req, v1::Model* resp);
  int DeleteModel(const v1::DeleteModelRequest& req, v1::DeleteModelResponse* resp);
  int CreateJob(const v1::CreateJobRequest& req, v1::Job* resp);
  int GetJob(const v1::GetJobRequest& req, v1::Job* resp);
  int ListJobs(const v1::ListJobsRequest& req, v1::ListJobsResponse* resp);
  int CancelJob(const v1::CancelJobRequest& req, v1::Job* resp);
  int PauseJob(const v1::PauseJobRequest& req, v1::Job* resp);
  int ResumeJob(const v1::ResumeJobRequest& req, v1::Job* resp);
  int ListCheckpoints(const v1::ListCheckpointsRequest& req, v1::ListCheckpointsResponse* resp);
  int ListJobEvents(const v1::ListJobEventsRequest& req, v1::ListJobEventsResponse* resp);
  int ListWorkers(const v1::ListWorkersRequest& req, v1::ListWorkersResponse* resp);

  // Every event of job `name` so far, following ListJobEvents' pages.
  int ListAllJobEvents(const std::string& name, std::vector<v1::JobEvent>* events);

  // Streaming RPCs, under `ctx` (see CallContext), which must outlive the
  // stream; the caller reads its status from Finish().
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> UploadDataset(
      grpc::ClientContext* ctx, v1::Dataset* resp);
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> ValidateDataset(
      grpc::ClientContext* ctx, v1::ValidateDatasetResponse* resp);
  std::unique_ptr<grpc::ClientWriter<v1::ImportModelRequest>> ImportModel(
      grpc::ClientContext* ctx, v1::Model* resp);
  std::unique_ptr<grpc::ClientReader<v1::ArtifactChunk>> DownloadArtifact(
      grpc::ClientContext* ctx, const v1::DownloadArtifactRequest& req);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> WatchJob(grpc::ClientContext* ctx,
                                                             const v1::WatchJobRequest& req);

 private:
  enum class OnFailure { kReport, kQuiet };

  // The one way a unary RPC is made: `rpc` of `stub` under kCallTimeout,
  // then the status turned into an exit code (reported unless kQuiet). The
  // bearer token is not added here: the channel's interceptor puts it into
  // every call's metadata, streams included.
  template <typename Stub, typename Request, typename Response>
  int Call(grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
           Stub& stub, const Request& req, Response* resp,
           OnFailure on_failure = OnFailure::kReport);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::ModelService::Stub> models_;
};

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_API_CLIENT_H_
