// The validation report as a tuneforge.v1 proto: shared by the scheduler's
// responses and the CLI's local `datasets validate`.
#ifndef TUNEFORGE_COMMON_REPORT_PROTO_H_
#define TUNEFORGE_COMMON_REPORT_PROTO_H_

#include "common/dataset_validator.h"
#include "tuneforge/v1/dataset.pb.h"

namespace tuneforge {

v1::ValidationReport ToProto(const DatasetReport& r);
v1::DatasetFormat ToProto(DatasetFormat f);
DatasetFormat FromProto(v1::DatasetFormat f);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_REPORT_PROTO_H_
