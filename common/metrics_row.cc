#include "common/metrics_row.h"

#include <cstdio>

namespace tuneforge {

std::string MetricsCsvHeader() {
  return "step,epoch,train_loss,learning_rate,grad_norm,tokens_per_second,validation_loss,"
         "perplexity,token_accuracy\n";
}

std::string MetricsCsvLine(const StepMetrics& m) {
  char line[256];
  std::snprintf(line, sizeof(line), "%lld,%d,%.9g,%.9g,%.9g,%.1f,,,\n",
                static_cast<long long>(m.step), m.epoch, m.loss, m.learning_rate, m.grad_norm,
                m.tokens_per_second);
  return line;
}

std::string MetricsCsvLine(const EvalMetrics& m) {
  char line[256];
  std::snprintf(line, sizeof(line), "%lld,%d,,,,,%.9g,%.9g,%.9g\n",
                static_cast<long long>(m.step), m.epoch, m.validation_loss, m.perplexity,
                m.token_accuracy);
  return line;
}

}  // namespace tuneforge
