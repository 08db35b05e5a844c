#include "client/api_client.h"

#include <cstdio>
#include <utility>

namespace tuneforge::cli {

int ExitCode(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK: return 0;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 3;
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return 4;
    case grpc::StatusCode::INVALID_ARGUMENT: return 2;
    default: return 1;
  }
}

int ReportFailure(const grpc::Status& s) {
  std::fprintf(stderr, "tuneforge: %s: %s\n",
               s.error_code() == grpc::StatusCode::UNAVAILABLE ? "server unavailable" : "error",
               s.error_message().c_str());
  return ExitCode(s);
}

std::unique_ptr<grpc::ClientContext> CallContext(std::chrono::seconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

ApiClient::ApiClient(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      datasets_(v1::DatasetService::NewStub(channel_)),
      jobs_(v1::JobService::NewStub(channel_)),
      models_(v1::ModelService::NewStub(channel_)) {}

template <typename Stub, typename Request, typename Response>
int ApiClient::Call(grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
                    Stub& stub, const Request& req, Response* resp, OnFailure on_failure) {
  std::unique_ptr<grpc::ClientContext> ctx = CallContext(kCallTimeout);
  const grpc::Status s = (stub.*rpc)(ctx.get(), req, resp);
  if (s.ok()) return 0;
  return on_failure == OnFailure::kQuiet ? ExitCode(s) : ReportFailure(s);
}

int ApiClient::GetDataset(const v1::GetDatasetRequest& req, v1::Dataset* resp) {
  return Call(&v1::DatasetService::Stub::GetDataset, *datasets_, req, resp);
}

int ApiClient::ListDatasets(const v1::ListDatasetsRequest& req, v1::ListDatasetsResponse* resp) {
  return Call(&v1::DatasetService::Stub::ListDatasets, *datasets_, req, resp);
}

int ApiClient::DeleteDataset(const v1::DeleteDatasetRequest& req,
                             v1::DeleteDatasetResponse* resp) {
  return Call(&v1::DatasetService::Stub::DeleteDataset, *datasets_, req, resp);
}

int ApiClient::QueryUpload(const v1::QueryUploadRequest& req, v1::QueryUploadResponse* resp) {
  return Call(&v1::DatasetService::Stub::QueryUpload, *datasets_, req, resp, OnFailure::kQuiet);
}

int ApiClient::ListModels(const v1::ListModelsRequest& req, v1::ListModelsResponse* resp) {
  return Call(&v1::ModelService::Stub::ListModels, *models_, req, resp);
}

int ApiClient::GetModel(const v1::GetModelRequest& req, v1::Model* resp) {
  return Call(&v1::ModelService::Stub::GetModel, *models_, req, resp);
}

int ApiClient::DeleteModel(const v1::DeleteModelRequest& req, v1::DeleteModelResponse* resp) {
  return Call(&v1::ModelService::Stub::DeleteModel, *models_, req, resp);
}

int ApiClient::CreateJob(const v1::CreateJobRequest& req, v1::Job* resp) {
  return Call(&v1::JobService::Stub::CreateJob, *jobs_, req, resp);
}

int ApiClient::GetJob(const v1::GetJobRequest& req, v1::Job* resp) {
  return Call(&v1::JobService::Stub::GetJob, *jobs_, req, resp);
}

int ApiClient::ListJobs(const v1::ListJobsRequest& req, v1::ListJobsResponse* resp) {
  return Call(&v1::JobService::Stub::ListJobs, *jobs_, req, resp);
}

int ApiClient::CancelJob(const v1::CancelJobRequest& req, v1::Job* resp) {
  return Call(&v1::JobService::Stub::CancelJob, *jobs_, req, resp);
}

int ApiClient::PauseJob(const v1::PauseJobRequest& req, v1::Job* resp) {
  return Call(&v1::JobService::Stub::PauseJob, *jobs_, req, resp);
}

int ApiClient::ResumeJob(const v1::ResumeJobRequest& req, v1::Job* resp) {
  return Call(&v1::JobService::Stub::ResumeJob, *jobs_, req, resp);
}

int ApiClient::ListCheckpoints(const v1::ListCheckpointsRequest& req,
                               v1::ListCheckpointsResponse* resp) {
  return Call(&v1::JobService::Stub::ListCheckpoints, *jobs_, req, resp);
}

int ApiClient::ListJobEvents(const v1::ListJobEventsRequest& req,
                             v1::ListJobEventsResponse* resp) {
  return Call(&v1::JobService::Stub::ListJobEvents, *jobs_, req, resp);
}

int ApiClient::ListWorkers(const v1::ListWorkersRequest& req, v1::ListWorkersResponse* resp) {
  return Call(&v1::JobService::Stub::ListWorkers, *jobs_, req, resp);
}

int ApiClient::ListAllJobEvents(const std::string& name, std::vector<v1::JobEvent>* events) {
  v1::ListJobEventsRequest req;
  req.set_name(name);
  req.set_page_size(1000);
  while (true) {
    v1::ListJobEventsResponse resp;
    if (int code = ListJobEvents(req, &resp); code != 0) return code;
    events->insert(events->end(), resp.events().begin(), resp.events().end());
    if (resp.next_page_token().empty()) return 0;
    req.set_page_token(resp.next_page_token());
  }
}

std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> ApiClient::UploadDataset(
    grpc::ClientContext* ctx, v1::Dataset* resp) {
  return datasets_->UploadDataset(ctx, resp);
}

std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> ApiClient::ValidateDataset(
    grpc::ClientContext* ctx, v1::ValidateDatasetResponse* resp) {
  return datasets_->ValidateDataset(ctx, resp);
}

std::unique_ptr<grpc::ClientWriter<v1::ImportModelRequest>> ApiClient::ImportModel(
    grpc::ClientContext* ctx, v1::Model* resp) {
  return models_->ImportModel(ctx, resp);
}

std::unique_ptr<grpc::ClientReader<v1::ArtifactChunk>> ApiClient::DownloadArtifact(
    grpc::ClientContext* ctx, const v1::DownloadArtifactRequest& req) {
  return jobs_->DownloadArtifact(ctx, req);
}

std::unique_ptr<grpc::ClientReader<v1::JobEvent>> ApiClient::WatchJob(
    grpc::ClientContext* ctx, const v1::WatchJobRequest& req) {
  return jobs_->WatchJob(ctx, req);
}

}  // namespace tuneforge::cli
