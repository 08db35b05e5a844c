// A job's metrics for people and plotting tools, from its events: the rows
// of the worker's metrics CSV (the same columns and precision), and an SVG
// chart of training and validation loss against step, with the learning
// rate on a second axis. Pure functions.
#ifndef TUNEFORGE_CLIENT_PLOT_H_
#define TUNEFORGE_CLIENT_PLOT_H_

#include <string>
#include <vector>

#include "common/metrics_row.h"
#include "tuneforge/v1/job.pb.h"

namespace tuneforge::cli {

// A training report or an evaluation, as the engine reported it.
struct MetricRow {
  bool evaluation = false;  // false: `train` holds a training report
  StepMetrics train;
  EvalMetrics eval;
  int64_t step() const { return evaluation ? eval.step : train.step; }
  int epoch() const { return evaluation ? eval.epoch : train.epoch; }
};

// One row per step and kind, in step order (a training report before an
// evaluation of the same step); a step an attempt repeated after a resume
// keeps its latest values, so the rows read as one run.
std::vector<MetricRow> MetricRows(const std::vector<v1::JobEvent>& events);
// "step,epoch,train_loss,learning_rate,grad_norm,tokens_per_second,
// validation_loss,perplexity,token_accuracy" and a line per row.
std::string MetricsCsv(const std::vector<MetricRow>& rows);
// A self-contained SVG document (800x450). Its plot area carries the axes'
// ranges as data-* attributes, and each series is one <polyline> with
// data-series="train_loss", "validation_loss" or "learning_rate".
std::string LossPlotSvg(const std::string& title, const std::vector<MetricRow>& rows);

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_PLOT_H_
