// How the CLI shows API objects to people: one-line events, job summaries,
// validation reports. Pure functions over tuneforge.v1 protos.
#ifndef TUNEFORGE_CLIENT_FORMAT_H_
#define TUNEFORGE_CLIENT_FORMAT_H_

#include <string>

#include "tuneforge/v1/dataset.pb.h"
#include "tuneforge/v1/job.pb.h"
#include "tuneforge/v1/model.pb.h"

namespace tuneforge::cli {

// "QUEUED", "RUNNING", ... (the enum name without its prefix).
std::string StateName(v1::JobState s);
// "1m05s", "42s", "2h03m".
std::string Duration(double seconds);
// One line per event, e.g. "#12 epoch 1 step 10/60 train_loss 2.3456 ...".
std::string EventLine(const v1::JobEvent& e);
// A few lines: state, progress, latest losses, error.
std::string JobSummary(const v1::Job& job);
// A model: name, family, size, context, dtype, tokenizer, origin.
std::string ModelSummary(const v1::Model& m);
std::string DatasetSummary(const v1::Dataset& d);
// Counts and token statistics of a report, e.g. "208 examples, ...".
std::string ReportSummary(const v1::ValidationReport& r);
// Every listed problem as "line L, column C, record R, field F: message [code]".
std::string ReportProblems(const v1::ValidationReport& r);
// Protobuf's canonical JSON mapping, stable for scripts.
std::string ToJson(const google::protobuf::Message& m);
// The same document as YAML (block style; strings double-quoted, so any
// value reads back exactly).
std::string ToYaml(const google::protobuf::Message& m);
// `m` as `format` says: "json" or "yaml".
std::string Structured(const google::protobuf::Message& m, const std::string& format);

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_FORMAT_H_
