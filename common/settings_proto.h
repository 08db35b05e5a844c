// The training settings to and from the API's Hyperparameters message, by
// field name through protobuf reflection: nothing here names a setting.
#ifndef TUNEFORGE_COMMON_SETTINGS_PROTO_H_
#define TUNEFORGE_COMMON_SETTINGS_PROTO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/training_settings.h"
#include "tuneforge/v1/job.pb.h"

namespace tuneforge {

// Reads `h`: a field left unset (or 0/empty, where it has no presence) takes
// its default. Errors (an enum number the API does not define) name the
// field ("schedule: ..."); bounds are CheckSettings's to check.
absl::StatusOr<TrainingSettings> SettingsFromProto(const v1::Hyperparameters& h);

// Writes every setting into `h`, or only those named in `only` if given.
void SettingsToProto(const TrainingSettings& s, v1::Hyperparameters* h,
                     const std::vector<std::string>* only = nullptr);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SETTINGS_PROTO_H_
