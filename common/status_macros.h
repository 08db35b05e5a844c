// RETURN_IF_ERROR and ASSIGN_OR_RETURN, which Debian's Abseil (20220623) lacks.
//
//   RETURN_IF_ERROR(store.Put(job));
//   ASSIGN_OR_RETURN(Job job, store.Get(id));
#ifndef TUNEFORGE_COMMON_STATUS_MACROS_H_
#define TUNEFORGE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TF_CONCAT_INNER_(a, b) a##b
#define TF_CONCAT_(a, b) TF_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    if (::absl::Status tf_status_ = (expr); !tf_status_.ok()) \
      return tf_status_;                                       \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(TF_CONCAT_(tf_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // TUNEFORGE_COMMON_STATUS_MACROS_H_
