// ModelService: presets, imported Hugging Face folders, and fine-tuned models.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/convert.h"
#include "server/grpc_status.h"
#include "server/services.h"

namespace tuneforge {
namespace {

// Reads metadata, then file headers each followed by their chunks, into a
// ModelImport; at the end of the stream checks and stores the model. A
// broken stream or folder leaves nothing behind (the import's writers remove
// their temp files).
class ImportReactor : public grpc::ServerReadReactor<v1::ImportModelRequest> {
 public:
  ImportReactor(Guard guard, ModelCatalog* catalog, v1::Model* response)
      : guard_(std::move(guard)), catalog_(catalog), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    // A caller whose token is revoked is cut off mid-stream.
    absl::Status s = guard_.Recheck();
    if (s.ok()) s = ok ? Consume() : Complete();
    if (!s.ok() || !ok) {
      import_.reset();
      Finish(ToGrpc(guard_.Done(name_, s)));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Consume() {
    if (!import_) {
      if (!request_.has_metadata()) {
        return absl::InvalidArgumentError("the first message of an import must carry metadata");
      }
      name_ = request_.metadata().display_name();
      RETURN_IF_ERROR(CheckText(name_, "metadata.display_name", 256));
      ASSIGN_OR_RETURN(import_, catalog_->StartImport(name_, guard_.scope().tenant));
      return absl::OkStatus();
    }
    switch (request_.data_case()) {
      case v1::ImportModelRequest::kFile:
        return import_->BeginFile(request_.file().path(), request_.file().size_bytes(),
                                  request_.file().sha256());
      case v1::ImportModelRequest::kChunk:
        // So a stream's length is bounded by its bytes.
        if (request_.chunk().empty()) return absl::InvalidArgumentError("chunk: empty");
        return import_->Append(request_.chunk());
      default:
        return absl::InvalidArgumentError("metadata may come only once, first");
    }
  }

  absl::Status Complete() {
    if (!import_) return absl::InvalidArgumentError("the import stream was empty");
    ASSIGN_OR_RETURN(ModelRecord m, import_->Finish());
    *response_ = ToProto(m);
    name_ = response_->name();
    return absl::OkStatus();
  }

  Guard guard_;
  std::string name_;  // for the audit: the display name, then the model's name
  ModelCatalog* const catalog_;
  v1::Model* const response_;
  v1::ImportModelRequest request_;
  std::unique_ptr<ModelImport> import_;
};

}  // namespace

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                       const v1::ListModelsRequest* request,
                                                       v1::ListModelsResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<int> size = PageSize(request->page_size(), 50, 1000);
  if (!size.ok()) return FinishNow(ctx, size.status());
  const std::string query = "models|" + guard.scope().ListFilter();
  absl::StatusOr<std::string> after =
      guards_.pages->Read(request->page_token(), guard.scope().tenant, query);
  if (!after.ok()) return FinishNow(ctx, after.status());
  absl::StatusOr<std::vector<ModelRecord>> page = catalog_->List(guard.scope(), *after, *size);
  if (!page.ok()) return FinishNow(ctx, page.status());
  for (const ModelRecord& m : *page) *response->add_models() = ToProto(m);
  if (static_cast<int>(page->size()) == *size) {
    response->set_next_page_token(guards_.pages->Make(guard.scope().tenant, query, page->back().id));
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModel(grpc::CallbackServerContext* ctx,
                                                     const v1::GetModelRequest* request,
                                                     v1::Model* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "models", "name");
  if (!id.ok()) return FinishNow(ctx, id.status());
  absl::StatusOr<ModelRecord> m = catalog_->Get(*id, guard.scope());
  if (m.ok()) *response = ToProto(*m);
  return FinishNow(ctx, m.status());
}

grpc::ServerReadReactor<v1::ImportModelRequest>* ModelServiceImpl::ImportModel(
    grpc::CallbackServerContext* ctx, v1::Model* response) {
  Guard guard(guards_, ctx, Api::kPublic, "ImportModel");
  if (!guard.ok()) return new FailedReader<v1::ImportModelRequest>(guard.Done(""));
  return new ImportReactor(std::move(guard), catalog_, response);
}

grpc::ServerUnaryReactor* ModelServiceImpl::DeleteModel(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteModelRequest* request,
                                                        v1::DeleteModelResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic, "DeleteModel");
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request->name()));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "models", "name");
  if (!id.ok()) return FinishNow(ctx, guard.Done(request->name(), id.status()));
  return FinishNow(ctx, guard.Done(request->name(), catalog_->Delete(*id, guard.scope())));
}

}  // namespace tuneforge
