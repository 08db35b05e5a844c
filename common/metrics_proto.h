// The metrics rows (metrics_row.h) to and from the API's TrainingMetrics and
// Evaluation messages: the one copy between the two, for the worker (which
// sends them), the scheduler (which stores them) and the CLI (which reads
// them back).
#ifndef TUNEFORGE_COMMON_METRICS_PROTO_H_
#define TUNEFORGE_COMMON_METRICS_PROTO_H_

#include "common/metrics_row.h"
#include "tuneforge/v1/job.pb.h"

namespace tuneforge {

void ToProto(const StepMetrics& m, v1::TrainingMetrics* out);
void ToProto(const EvalMetrics& m, v1::Evaluation* out);
StepMetrics FromProto(const v1::TrainingMetrics& m);
EvalMetrics FromProto(const v1::Evaluation& m);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_METRICS_PROTO_H_
