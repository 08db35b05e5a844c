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
  std::fputs(MetricsCsvHeader().c_str(), file_);
  for (const std::string& line : kept) std::fprintf(file_, "%s\n", line.c_str());
  std::fflush(file_);
}

void MetricsCsv::Row(const StepMetrics& m) {
  if (!file_) return;
  std::fputs(MetricsCsvLine(m).c_str(), file_);
  std::fflush(file_);
}

void MetricsCsv::Row(const EvalMetrics& m) {
  if (!file_) return;
  std::fputs(MetricsCsvLine(m).c_str(), file_);
  std::fflush(file_);
}

}  // namespace tuneforge::engine
