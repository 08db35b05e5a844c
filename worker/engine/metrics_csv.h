// Every metric of a run as CSV rows at full precision, for plots and for the
// job's metrics artifact: one row per report
//   step,epoch,train_loss,learning_rate,grad_norm,tokens_per_second,,,
// and one per evaluation
//   step,epoch,,,,,validation_loss,perplexity,token_accuracy
// A resumed run keeps the rows up to its checkpoint and drops the rest, so
// the file reads as if the run had never stopped. No libtorch include.
//
// Not thread-safe.
#ifndef TUNEFORGE_WORKER_ENGINE_METRICS_CSV_H_
#define TUNEFORGE_WORKER_ENGINE_METRICS_CSV_H_

#include <cstdint>
#include <cstdio>
#include <string>

#include "worker/engine/trainer.h"

namespace tuneforge::engine {

class MetricsCsv {
 public:
  MetricsCsv() = default;
  ~MetricsCsv();
  MetricsCsv(const MetricsCsv&) = delete;
  MetricsCsv& operator=(const MetricsCsv&) = delete;

  // Opens `path`; with resumed_from_step > 0 keeps its rows up to that step.
  // Throws std::runtime_error when it cannot write.
  void Open(const std::string& path, int64_t resumed_from_step);
  void Row(const StepMetrics& m);
  void Row(const EvalMetrics& m);

 private:
  std::FILE* file_ = nullptr;
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_METRICS_CSV_H_
