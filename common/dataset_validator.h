// Streaming validation of dataset files.
//
// Reads a file in chunks, as they arrive, and checks every record: memory
// holds one record at a time, plus 20 bytes per record for duplicate
// detection and token statistics (and the examples, when kept). Every problem is
// reported with its record number, line, column and field, so a user can fix
// the whole file in one pass.
//
// Accepted files:
//   - a JSON array of records, or JSONL (one record per line), where a record
//     is {"prompt", "completion"}, {"messages": [{"role", "content",
//     "weight"?}, ...]} or {"text"}; the kind is declared or detected from the
//     first record, and a record of another kind is a `mixed_format` error;
//   - plain text (declared DatasetFormat::kText): the whole file is one
//     document, or documents are split on `separator`.
//
//   DatasetValidator v({.declared = DatasetFormat::kUnspecified});
//   v.Feed(chunk1);
//   v.Feed(chunk2);
//   ParsedDataset parsed = v.Finish();   // report + valid examples
//
// Not thread-safe: one validator per stream.
#ifndef TUNEFORGE_COMMON_DATASET_VALIDATOR_H_
#define TUNEFORGE_COMMON_DATASET_VALIDATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/dataset.h"

namespace tuneforge {

enum class Severity { kError, kWarning };

struct DatasetProblem {
  std::string code;  // stable id, e.g. "missing_field", "not_json"
  Severity severity = Severity::kError;
  int64_t record = 0;  // 1-based record number; 0 when not about a record
  int64_t line = 0;    // 1-based line of the problem (or of its record)
  int64_t column = 0;  // 1-based byte column in that line
  std::string field;   // JSON pointer, e.g. "/messages/2/role"; empty for the record
  std::string message;
};

struct TokenStats {  // per valid example, under the byte tokenizer
  int64_t min = 0;
  int64_t max = 0;
  int64_t p50 = 0;
  int64_t p95 = 0;
  double mean = 0;
};

struct DatasetReport {
  DatasetFormat format = DatasetFormat::kUnspecified;
  std::string tokenizer = "byte";  // what counted the tokens
  int64_t example_count = 0;   // valid examples (documents, for text)
  int64_t token_estimate = 0;  // their tokens in all
  TokenStats tokens;
  int64_t over_max_seq_len = 0;  // examples longer than the given max_seq_len
  int64_t duplicate_count = 0;   // examples equal to an earlier one
  int64_t empty_prompt_count = 0;
  int64_t turn_count = 0;        // chat messages
  int64_t error_count = 0;
  int64_t warning_count = 0;
  std::map<std::string, int64_t> problem_counts;  // by code; always complete
  // The first kMaxListedProblems, in file order, then the duplicates (which
  // are only known at the end).
  std::vector<DatasetProblem> problems;
};

// The report lists this many problems; the counts are always complete.
inline constexpr size_t kMaxListedProblems = 1000;

struct ParsedDataset {
  std::vector<Example> examples;  // the valid records (empty unless kept)
  DatasetReport report;
};

struct ValidatorOptions {
  DatasetFormat declared = DatasetFormat::kUnspecified;  // detect when unspecified
  std::string separator;         // plain text: document separator; "" = one document
  int64_t max_seq_len = 0;       // count examples over this many tokens; 0: don't
  bool keep_examples = true;     // false: report only (uploads)
  int64_t max_record_bytes = 64 << 20;  // longer records are `record_too_long`
};

class DatasetValidator {
 public:
  explicit DatasetValidator(ValidatorOptions options = {});
  ~DatasetValidator();
  DatasetValidator(const DatasetValidator&) = delete;
  DatasetValidator& operator=(const DatasetValidator&) = delete;

  void Feed(std::string_view chunk);
  // Ends the stream; the validator may not be fed afterwards.
  ParsedDataset Finish();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Validates a whole file held in memory.
ParsedDataset ParseDataset(std::string_view bytes, ValidatorOptions options = {});

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_DATASET_VALIDATOR_H_
