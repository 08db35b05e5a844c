// A run's metrics rows, one type from the engine to the CLI: the engine
// reports them, the worker writes them to metrics.csv and sends them as
// events, the scheduler stores them (as MetricsEvent and EvaluationEvent,
// server/records.h), and the CLI reads them back from the events. The
// metrics CSV has one writer, here: a line per report
//   step,epoch,train_loss,learning_rate,grad_norm,tokens_per_second,,,
// and one per evaluation
//   step,epoch,,,,,validation_loss,perplexity,token_accuracy
// at full precision. Plain values; no libtorch.
#ifndef TUNEFORGE_COMMON_METRICS_ROW_H_
#define TUNEFORGE_COMMON_METRICS_ROW_H_

#include <cstdint>
#include <string>

namespace tuneforge {

// Counted while training, reported every log_every_steps.
struct StepMetrics {
  int epoch = 0;            // 1-based
  int64_t step = 0;         // optimizer steps done, 1-based
  int64_t total_steps = 0;
  double loss = 0;          // mean loss per target token since the last report
  double learning_rate = 0;
  double grad_norm = 0;     // before clipping
  double tokens_per_second = 0;  // input tokens (no padding) over wall time
  int64_t tokens_seen = 0;
  double epoch_progress = 0;     // 0..1
  double eta_seconds = 0;
};

// One evaluation on the validation set.
struct EvalMetrics {
  int epoch = 0;
  int64_t step = 0;
  double validation_loss = 0;  // mean over validation target tokens
  double perplexity = 0;
  double token_accuracy = 0;   // argmax hits over target tokens
};

// The header line and the rows of the metrics CSV, each ending in "\n".
std::string MetricsCsvHeader();
std::string MetricsCsvLine(const StepMetrics& m);
std::string MetricsCsvLine(const EvalMetrics& m);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_METRICS_ROW_H_
