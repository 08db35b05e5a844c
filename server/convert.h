// Conversions between the scheduler's records and tuneforge.v1 protos: the one
// place that knows both. Resource names follow AIP-122 ("jobs/{id}").
//
// Thread-safe: pure functions.
#ifndef TUNEFORGE_SERVER_CONVERT_H_
#define TUNEFORGE_SERVER_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/report_proto.h"
#include "server/models.h"
#include "server/records.h"
#include "tuneforge/v1/dataset.pb.h"
#include "tuneforge/v1/job.pb.h"
#include "tuneforge/v1/model.pb.h"

namespace tuneforge {

// "jobs/abc" -> "abc" when `name` has the collection's prefix and a valid id;
// else INVALID_ARGUMENT naming `field`.
// INVALID_ARGUMENT naming `field` when `text` (a display name, a suffix)
// is longer than `max_bytes` or holds control characters.
absl::Status CheckText(const std::string& text, const char* field, size_t max_bytes);

absl::StatusOr<std::string> IdFromName(const std::string& name, const std::string& collection,
                                       const std::string& field);

v1::Dataset ToProto(const DatasetRecord& d);

v1::Model ToProto(const ModelRecord& m);

// Validates the client's job, fills defaults, and checks every bound; errors
// name the field ("job.hyperparameters.epochs: ...").
absl::StatusOr<JobSpec> JobSpecFromProto(const v1::Job& job);
v1::Job ToProto(const Job& job);
v1::JobEvent ToProto(const Event& e);
// A worker's event; sequence and time are ignored (the scheduler sets them).
absl::StatusOr<Event> EventFromProto(const v1::JobEvent& e);
v1::JobState ToProto(JobState s);
JobState FromProto(v1::JobState s);

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_CONVERT_H_
