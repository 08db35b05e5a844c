// Parsing and validation of dataset files.
//
// A dataset file holds prompt/completion examples, either as a JSON array
// (`[{"prompt": "...", "completion": "..."}, ...]`) or as JSONL (one object per
// line). ParseDataset reads every record, keeps the good ones, and reports
// every problem with its record number, line, column and field, so a user can
// fix the whole file in one pass:
//
//   ParsedDataset parsed = ParseDataset(bytes);
//   if (parsed.report.error_count > 0) { ...show parsed.report.problems... }
//   for (const Example& e : parsed.examples) { ... }
//
// Depends only on the C++ standard library and nlohmann/json, so the training
// engine can link it without the server's dependencies. Thread-safe: all
// functions are pure.
#ifndef TUNEFORGE_COMMON_DATASET_H_
#define TUNEFORGE_COMMON_DATASET_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tuneforge {

enum class DatasetFormat { kUnspecified, kPromptCompletion, kChat, kText };

// "prompt_completion", "chat", "text" or "unspecified".
std::string_view DatasetFormatName(DatasetFormat format);

struct Example {
  std::string prompt;      // e.g. "How many days of annual leave do I get?"
  std::string completion;  // e.g. "Full-time employees get 25 days a year."
};

enum class Severity { kError, kWarning };

struct DatasetProblem {
  std::string code;  // stable id, e.g. "missing_field", "not_json"
  Severity severity = Severity::kError;
  int64_t record = 0;  // 1-based record number; 0 when not about a record
  int64_t line = 0;    // 1-based line of the record (or of the error)
  int64_t column = 0;  // 1-based byte column in that line
  std::string field;   // JSON pointer, e.g. "/completion"; empty for the record
  std::string message;
};

struct DatasetReport {
  DatasetFormat format = DatasetFormat::kUnspecified;
  int64_t example_count = 0;
  int64_t token_estimate = 0;  // bytes of prompt and completion + 1 per example
  int64_t error_count = 0;
  int64_t warning_count = 0;
  std::vector<DatasetProblem> problems;  // at most kMaxListedProblems
};

// The report lists this many problems; the counts above are always complete.
inline constexpr size_t kMaxListedProblems = 1000;

struct ParsedDataset {
  std::vector<Example> examples;  // only the valid records
  DatasetReport report;
};

// Parses `bytes` as a dataset file. `declared` may name the format; only
// kPromptCompletion (or kUnspecified, meaning detect) is supported so far.
ParsedDataset ParseDataset(std::string_view bytes,
                           DatasetFormat declared = DatasetFormat::kUnspecified);

// Splits example indices [0, n) into a training and a validation set,
// deterministically from `seed`: the same (n, fraction, seed) always gives the
// same split, on every machine. A positive fraction holds out at least one
// example when n >= 2, and never all of them.
struct Split {
  std::vector<int64_t> train;
  std::vector<int64_t> validation;
};
Split SplitExamples(int64_t n, double validation_fraction, uint64_t seed);

// How many examples a split of n at `validation_fraction` holds out.
int64_t ValidationCount(int64_t n, double validation_fraction);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_DATASET_H_
