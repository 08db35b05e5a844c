// The worker's unary calls to the scheduler: their deadline, and their
// status as an absl::Status (the codes are the same numbers).
#ifndef TUNEFORGE_WORKER_GRPC_CALL_H_
#define TUNEFORGE_WORKER_GRPC_CALL_H_

#include <chrono>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace tuneforge {

inline constexpr auto kCallTimeout = std::chrono::seconds(30);

inline void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

inline absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace tuneforge

#endif  // TUNEFORGE_WORKER_GRPC_CALL_H_
