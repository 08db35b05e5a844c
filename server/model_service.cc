// ModelService: the built-in presets (imports come with the model formats work).
#include "absl/strings/str_cat.h"
#include "server/convert.h"
#include "server/services.h"

namespace tuneforge {

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                       const v1::ListModelsRequest* request,
                                                       v1::ListModelsResponse* response) {
  for (const ModelInfo& m : PresetModels()) *response->add_models() = ToProto(m);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModel(grpc::CallbackServerContext* ctx,
                                                     const v1::GetModelRequest* request,
                                                     v1::Model* response) {
  absl::StatusOr<std::string> id = IdFromName(request->name(), "models", "name");
  if (!id.ok()) return FinishNow(ctx, id.status());
  const ModelInfo* m = FindModel(*id);
  if (m == nullptr) {
    return FinishNow(ctx, absl::NotFoundError(absl::StrCat("model ", *id, " not found")));
  }
  *response = ToProto(*m);
  return FinishNow(ctx, absl::OkStatus());
}

}  // namespace tuneforge
