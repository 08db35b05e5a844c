// How the CLI shows API objects to people: one-line events, job summaries,
// validation reports. Pure functions over tuneforge.v1 protos.
#ifndef TUNEFORGE_CLIENT_FORMAT_H_
#define TUNEFORGE_CLIENT_FORMAT_H_

#include <string>
#include <vector>

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
// Rows under a header in aligned columns; when wider than `width` (0: no
// limit), the widest column is cut (with "…") until the table fits.
std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows, int width);
// One table row per item, for the list commands.
std::vector<std::string> JobRow(const v1::Job& job);
std::vector<std::string> DatasetRow(const v1::Dataset& d);
std::vector<std::string> ModelRow(const v1::Model& m);
inline const std::vector<std::string> kJobColumns = {"NAME",  "STATE", "MODEL",  "STEP",
                                                     "TRAIN", "VALID", "CREATED"};
inline const std::vector<std::string> kDatasetColumns = {"NAME", "STATE", "EXAMPLES", "BYTES",
                                                         "DISPLAY NAME"};
inline const std::vector<std::string> kModelColumns = {"NAME", "FAMILY", "PARAMS", "CONTEXT",
                                                       "SOURCE", "DISPLAY NAME"};

// What `jobs watch` shows on a terminal, kept up to date from the events.
struct LiveState {
  std::string job;          // "jobs/ID"
  std::string state = "QUEUED";
  int64_t last_sequence = 0;
  v1::TrainingMetrics metrics;  // the latest report
  bool has_metrics = false;
  double validation_loss = 0;
  bool has_validation = false;
  std::vector<double> losses;   // train loss of every report, for the sparkline
  std::string sample;           // the latest "prompt -> completion"
  std::string last_line;        // the latest other event, as EventLine says it
  void Apply(const v1::JobEvent& e);
};
// The live view's lines, each at most `width` columns: state, epoch and step
// progress bars with the ETA, tokens/s and losses, a sparkline of the train
// loss, the latest sample and the latest other event.
std::vector<std::string> LiveFrame(const LiveState& s, int width);

// Protobuf's canonical JSON mapping, stable for scripts.
std::string ToJson(const google::protobuf::Message& m);
// The same document as YAML (block style; strings double-quoted, so any
// value reads back exactly).
std::string ToYaml(const google::protobuf::Message& m);
// `m` as `format` says: "json" or "yaml".
std::string Structured(const google::protobuf::Message& m, const std::string& format);

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_FORMAT_H_
