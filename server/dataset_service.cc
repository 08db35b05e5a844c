// DatasetService: streamed uploads and the dataset catalogue.
#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "server/convert.h"
#include "server/grpc_status.h"
#include "server/models.h"
#include "server/services.h"

namespace tuneforge {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

absl::StatusOr<int> PageSize(int requested, int default_size, int max_size) {
  if (requested < 0) return absl::InvalidArgumentError("page_size: must be >= 0");
  if (requested == 0) return default_size;
  return std::min(requested, max_size);  // AIP-158: larger sizes are coerced
}

namespace {

// Reads metadata, then chunks into a DatasetUpload; at the end of the stream
// stores (or, for a dry run, only validates) the dataset.
class UploadReactor : public grpc::ServerReadReactor<v1::UploadDatasetRequest> {
 public:
  UploadReactor(grpc::CallbackServerContext* ctx, Guard guard, DatasetCatalog* catalog,
                ModelCatalog* models, v1::Dataset* stored, v1::ValidateDatasetResponse* validated)
      : ctx_(ctx),
        guard_(std::move(guard)),
        catalog_(catalog),
        models_(models),
        stored_(stored),
        validated_(validated) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    // Whatever the bytes, the stream ends: an exception escaping a reactor
    // would leave it open forever (and the upload id held).
    try {
      // A caller whose token is revoked is cut off mid-stream.
      absl::Status s = guard_.Recheck();
      if (s.ok() && !ok) {
        Complete();
        return;
      }
      if (s.ok()) s = Consume();
      if (!s.ok()) {
        Release(/*keep=*/false);  // removes the partial blob
        Finish(ToGrpc(guard_.Done(name_, s)));
        return;
      }
    } catch (const std::exception& e) {
      Release(/*keep=*/false);
      Finish(ToGrpc(guard_.Done(
          name_, absl::InternalError(absl::StrCat("the upload failed on the server: ",
                                                  EscapeInvalidUtf8(e.what()))))));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Consume() {
    if (!upload_) {
      if (!request_.has_metadata()) {
        return absl::InvalidArgumentError(
            "the first message of an upload must carry metadata, not a chunk");
      }
      const v1::UploadDatasetMetadata& m = request_.metadata();
      name_ = m.display_name();
      if (m.size_bytes() <= 0) {
        return absl::InvalidArgumentError(
            "metadata.size_bytes: required, so that a stream cut short is never stored");
      }
      RETURN_IF_ERROR(CheckText(m.display_name(), "metadata.display_name", 256));
      if (m.separator().size() > 256) {
        return absl::InvalidArgumentError("metadata.separator: at most 256 bytes");
      }
      if (!m.separator().empty() && m.format() != v1::DATASET_FORMAT_TEXT) {
        return absl::InvalidArgumentError(
            "metadata.separator: only plain text (format TEXT) is split on a separator");
      }
      if (m.max_seq_len() < 0) {
        return absl::InvalidArgumentError("metadata.max_seq_len: must be >= 0");
      }
      if (!m.model().empty()) {
        // Token counts are bytes, an upper bound for any byte-level BPE
        // model (each token is at least one byte); the name is still checked.
        ASSIGN_OR_RETURN(std::string model, IdFromName(m.model(), "models", "metadata.model"));
        absl::StatusOr<ModelRecord> known = models_->Get(model, guard_.scope());
        if (absl::IsNotFound(known.status())) {
          return absl::InvalidArgumentError(
              absl::StrCat("metadata.model: no model 'models/", model, "'; see ListModels"));
        }
        RETURN_IF_ERROR(known.status());
      }
      UploadMetadata metadata{m.display_name(), FromProto(m.format()), m.size_bytes(),
                              m.sha256(),       m.separator(),         m.max_seq_len(),
                              guard_.scope().tenant};
      if (m.upload_id().empty()) {
        if (m.offset() != 0) {
          return absl::InvalidArgumentError("metadata.offset: needs an upload_id to resume");
        }
        ASSIGN_OR_RETURN(upload_, catalog_->StartUpload(std::move(metadata), stored_ != nullptr));
        return absl::OkStatus();
      }
      if (stored_ == nullptr) {
        return absl::InvalidArgumentError("metadata.upload_id: ValidateDataset is not resumable");
      }
      RETURN_IF_ERROR(CheckUploadId(m.upload_id()));
      ASSIGN_OR_RETURN(upload_, catalog_->Resume(m.upload_id(), std::move(metadata), m.offset()));
      upload_id_ = m.upload_id();
      return absl::OkStatus();
    }
    if (request_.data_case() != v1::UploadDatasetRequest::kChunk) {
      return absl::InvalidArgumentError("after the metadata, every message must be a chunk");
    }
    // So a stream's length is bounded by its bytes.
    if (request_.chunk().empty()) return absl::InvalidArgumentError("chunk: empty");
    return upload_->Append(request_.chunk());
  }

  // Ends the upload: a resumable one that was cut off is kept for later,
  // anything else goes (with its temp file) once `upload_` is released.
  void Release(bool keep) {
    if (!upload_id_.empty()) {
      catalog_->Suspend(guard_.scope().tenant, upload_id_, keep ? std::move(upload_) : nullptr);
    }
    upload_.reset();
  }

  void Complete() {
    if (ctx_->IsCancelled()) {
      const int64_t kept = upload_ ? upload_->size() : 0;
      const bool resumable = !upload_id_.empty();
      Release(/*keep=*/true);
      Finish(ToGrpc(guard_.Done(
          name_, absl::CancelledError(resumable ? absl::StrCat("upload interrupted; ", kept,
                                                               " bytes kept: resume at offset ",
                                                               kept)
                                                : "upload cancelled; nothing was stored"))));
      return;
    }
    if (!upload_) {
      Finish(ToGrpc(guard_.Done(name_, absl::InvalidArgumentError("the upload stream was empty"))));
      return;
    }
    absl::Status status;
    if (stored_ != nullptr) {
      absl::StatusOr<DatasetRecord> d = upload_->Finish();
      status = d.status();
      if (d.ok()) {
        *stored_ = ToProto(*d);
        name_ = stored_->name();
      }
    } else {
      absl::StatusOr<DatasetReport> r = upload_->Validate();
      status = r.status();
      if (r.ok()) *validated_->mutable_report() = ToProto(*r);
    }
    Release(/*keep=*/false);
    Finish(ToGrpc(guard_.Done(name_, status)));
  }

  static absl::Status CheckUploadId(const std::string& id) {
    const bool ok = !id.empty() && id.size() <= 64 &&
                    std::all_of(id.begin(), id.end(), [](char c) {
                      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                    });
    return ok ? absl::OkStatus()
              : absl::InvalidArgumentError(
                    "upload_id: 1-64 characters of letters, digits, '_' and '-'");
  }

  grpc::CallbackServerContext* ctx_;
  Guard guard_;
  std::string name_;  // for the audit: the display name, then the dataset's name
  DatasetCatalog* catalog_;
  ModelCatalog* models_;
  v1::Dataset* stored_;
  v1::ValidateDatasetResponse* validated_;
  v1::UploadDatasetRequest request_;
  std::unique_ptr<DatasetUpload> upload_;
  std::string upload_id_;  // set once this stream holds a resumable upload
};

}  // namespace

grpc::ServerReadReactor<v1::UploadDatasetRequest>* DatasetServiceImpl::UploadDataset(
    grpc::CallbackServerContext* ctx, v1::Dataset* response) {
  Guard guard(guards_, ctx, Api::kPublic, "UploadDataset");
  if (!guard.ok()) return new FailedReader<v1::UploadDatasetRequest>(guard.Done(""));
  return new UploadReactor(ctx, std::move(guard), catalog_, models_, response, nullptr);
}

grpc::ServerReadReactor<v1::UploadDatasetRequest>* DatasetServiceImpl::ValidateDataset(
    grpc::CallbackServerContext* ctx, v1::ValidateDatasetResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return new FailedReader<v1::UploadDatasetRequest>(guard.Done(""));
  return new UploadReactor(ctx, std::move(guard), catalog_, models_, nullptr, response);
}

grpc::ServerUnaryReactor* DatasetServiceImpl::QueryUpload(grpc::CallbackServerContext* ctx,
                                                          const v1::QueryUploadRequest* request,
                                                          v1::QueryUploadResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<std::pair<int64_t, int64_t>> sizes =
      catalog_->Query(guard.scope().tenant, request->upload_id());
  if (sizes.ok()) {
    response->set_committed_size(sizes->first);
    response->set_size_bytes(sizes->second);
  }
  return FinishNow(ctx, sizes.status());
}

grpc::ServerUnaryReactor* DatasetServiceImpl::GetDataset(grpc::CallbackServerContext* ctx,
                                                         const v1::GetDatasetRequest* request,
                                                         v1::Dataset* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "datasets", "name");
  if (!id.ok()) return FinishNow(ctx, id.status());
  absl::StatusOr<DatasetRecord> d = catalog_->Get(*id, guard.scope());
  if (d.ok()) *response = ToProto(*d);
  return FinishNow(ctx, d.status());
}

grpc::ServerUnaryReactor* DatasetServiceImpl::ListDatasets(grpc::CallbackServerContext* ctx,
                                                           const v1::ListDatasetsRequest* request,
                                                           v1::ListDatasetsResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic);
  if (!guard.ok()) return FinishNow(ctx, guard.Done(""));
  absl::StatusOr<int> size = PageSize(request->page_size(), 50, 1000);
  if (!size.ok()) return FinishNow(ctx, size.status());
  const std::string query = "datasets|" + guard.scope().ListFilter();
  absl::StatusOr<std::string> after =
      guards_.pages->Read(request->page_token(), guard.scope().tenant, query);
  if (!after.ok()) return FinishNow(ctx, after.status());
  absl::StatusOr<std::vector<DatasetRecord>> page = catalog_->List(guard.scope(), *after, *size);
  if (!page.ok()) return FinishNow(ctx, page.status());
  for (const DatasetRecord& d : *page) *response->add_datasets() = ToProto(d);
  if (static_cast<int>(page->size()) == *size) {
    response->set_next_page_token(guards_.pages->Make(guard.scope().tenant, query, page->back().id));
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* DatasetServiceImpl::DeleteDataset(grpc::CallbackServerContext* ctx,
                                                            const v1::DeleteDatasetRequest* request,
                                                            v1::DeleteDatasetResponse* response) {
  Guard guard(guards_, ctx, Api::kPublic, "DeleteDataset");
  if (!guard.ok()) return FinishNow(ctx, guard.Done(request->name()));
  absl::StatusOr<std::string> id = IdFromName(request->name(), "datasets", "name");
  if (!id.ok()) return FinishNow(ctx, guard.Done(request->name(), id.status()));
  return FinishNow(ctx, guard.Done(request->name(), catalog_->Delete(*id, guard.scope())));
}

}  // namespace tuneforge
