#include "worker/engine/metrics_csv.h"

#include <fstream>
#include <stdexcept>
#include <vector>

namespace tuneforge::engine {

MetricsCsv::~MetricsCsv() {
  if (file_) std::fclose(file_);
}

void MetricsCsv::Open(const std::string& path, int64_t resumed_from_step) {
  std::vector<std::string> kept;
  if (resumed_from_step > 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line.rfind("step,", 0) == 0) continue;
      try {
        if (std::stoll(line.substr(0, line.find(','))) <= resumed_from_step) kept.push_back(line);
      } catch (const std::exception&) {
        // a torn last line from a killed run
      }
    }
  }
  if (file_) std::fclose(file_);
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) throw std::runtime_error("cannot write " + path);
  std::fprintf(file_, "step,epoch,train_loss,learning_rate,grad_norm,tokens_per_second,"
                      "validation_loss,perplexity,token_accuracy\n");
  for (const std::string& line : kept) std::fprintf(file_, "%s\n", line.c_str());
  std::fflush(file_);
}

void MetricsCsv::Row(const StepMetrics& m) {
  if (!file_) return;
  std::fprintf(file_, "%lld,%d,%.9g,%.9g,%.9g,%.1f,,,\n", static_cast<long long>(m.step), m.epoch,
               m.loss, m.learning_rate, m.grad_norm, m.tokens_per_second);
  std::fflush(file_);
}

void MetricsCsv::Row(const EvalMetrics& m) {
  if (!file_) return;
  std::fprintf(file_, "%lld,%d,,,,,%.9g,%.9g,%.9g\n", static_cast<long long>(m.step), m.epoch,
               m.loss, m.perplexity, m.token_accuracy);
  std::fflush(file_);
}

}  // namespace tuneforge::engine
