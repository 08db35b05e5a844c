// The one mapping from absl::Status to grpc::Status. Codes share numbering.
#ifndef TUNEFORGE_SERVER_GRPC_STATUS_H_
#define TUNEFORGE_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace tuneforge {

inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_GRPC_STATUS_H_
