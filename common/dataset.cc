#include "common/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

namespace tuneforge {
namespace {

using json = nlohmann::json;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Converts byte offsets into 1-based (line, column), for offsets that only
// grow: one pass over the file in all.
class LineCursor {
 public:
  explicit LineCursor(std::string_view text) : text_(text) {}

  std::pair<int64_t, int64_t> At(size_t offset) {
    while (pos_ < offset) {
      const void* nl = std::memchr(text_.data() + pos_, '\n', offset - pos_);
      if (nl == nullptr) {
        pos_ = offset;
        break;
      }
      pos_ = static_cast<const char*>(nl) - text_.data() + 1;
      ++line_;
      line_start_ = pos_;
    }
    return {line_, static_cast<int64_t>(offset - line_start_) + 1};
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  size_t line_start_ = 0;
  int64_t line_ = 1;
};

class Validator {
 public:
  explicit Validator(std::string_view bytes) : bytes_(bytes), cursor_(bytes) {}

  ParsedDataset Run(DatasetFormat declared) {
    out_.report.format = DatasetFormat::kPromptCompletion;
    if (declared != DatasetFormat::kUnspecified &&
        declared != DatasetFormat::kPromptCompletion) {
      Add("unsupported_format", Severity::kError, 0, 0, "",
          "format '" + std::string(DatasetFormatName(declared)) +
              "' is not supported yet; use prompt/completion records");
      return Finish();
    }
    size_t start = 0;
    if (bytes_.substr(0, 3) == "\xEF\xBB\xBF") start = 3;  // UTF-8 BOM
    while (start < bytes_.size() && IsSpace(bytes_[start])) ++start;
    if (start == bytes_.size()) {
      Add("empty_file", Severity::kError, 0, 0, "", "the file holds no records");
    } else if (bytes_[start] == '[') {
      ParseArray(start);
    } else {
      ParseLines(start);
    }
    if (out_.examples.empty() && out_.report.error_count == 0) {
      Add("empty_file", Severity::kError, 0, 0, "", "the file holds no records");
    }
    return Finish();
  }

 private:
  ParsedDataset Finish() {
    out_.report.example_count = static_cast<int64_t>(out_.examples.size());
    return std::move(out_);
  }

  void Add(std::string code, Severity severity, int64_t record, size_t offset,
           std::string field, std::string message) {
    (severity == Severity::kError ? out_.report.error_count
                                  : out_.report.warning_count)++;
    if (out_.report.problems.size() >= kMaxListedProblems) return;
    auto [line, column] = cursor_.At(offset);
    out_.report.problems.push_back(DatasetProblem{std::move(code), severity, record, line,
                                                  column, std::move(field),
                                                  std::move(message)});
  }

  // JSONL: every non-blank line is one record.
  void ParseLines(size_t pos) {
    int64_t record = 0;
    while (pos < bytes_.size()) {
      size_t end = bytes_.find('\n', pos);
      if (end == std::string_view::npos) end = bytes_.size();
      std::string_view line = bytes_.substr(pos, end - pos);
      size_t first = 0;
      while (first < line.size() && IsSpace(line[first])) ++first;
      if (first < line.size()) ParseRecord(++record, pos + first, line.substr(first));
      pos = end + 1;
    }
  }

  // A JSON array: find each top-level element's extent, then parse each one on
  // its own, so one broken record does not hide the others.
  void ParseArray(size_t open) {
    int64_t record = 0;
    size_t pos = open + 1;
    while (true) {
      while (pos < bytes_.size() && IsSpace(bytes_[pos])) ++pos;
      if (pos >= bytes_.size()) {
        Add("truncated", Severity::kError, 0, bytes_.size(), "",
            "the JSON array is not closed with ']'");
        return;
      }
      if (bytes_[pos] == ']') break;
      size_t begin = pos;
      int depth = 0;
      bool in_string = false;
      for (; pos < bytes_.size(); ++pos) {
        char c = bytes_[pos];
        if (in_string) {
          if (c == '\\') {
            ++pos;
          } else if (c == '"') {
            in_string = false;
          }
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (depth == 0) break;  // the array's own ']'
          --depth;
        } else if (c == ',' && depth == 0) {
          break;
        }
      }
      size_t end = std::min(pos, bytes_.size());
      size_t trimmed = end;
      while (trimmed > begin && IsSpace(bytes_[trimmed - 1])) --trimmed;
      ParseRecord(++record, begin, bytes_.substr(begin, trimmed - begin));
      if (pos >= bytes_.size()) continue;  // reported as truncated above
      if (bytes_[pos] == ',') ++pos;
    }
    size_t after = pos + 1;
    while (after < bytes_.size() && IsSpace(bytes_[after])) ++after;
    if (after < bytes_.size()) {
      Add("trailing_data", Severity::kError, 0, after, "",
          "unexpected data after the closing ']' of the JSON array");
    }
  }

  void ParseRecord(int64_t record, size_t offset, std::string_view text) {
    json value;
    try {
      value = json::parse(text.begin(), text.end());
    } catch (const json::parse_error& e) {
      size_t at = offset + (e.byte > 0 ? std::min<size_t>(e.byte - 1, text.size()) : 0);
      std::string what = e.what();
      size_t colon = what.find("parse error");
      Add("not_json", Severity::kError, record, at, "",
          "record is not valid JSON: " + (colon == std::string::npos ? what : what.substr(colon)));
      return;
    }
    if (!value.is_object()) {
      Add("wrong_type", Severity::kError, record, offset, "",
          std::string("record must be a JSON object with \"prompt\" and \"completion\", not ") +
              value.type_name());
      return;
    }
    bool ok = true;
    Example example;
    for (auto [key, target] : {std::pair{"prompt", &example.prompt},
                               std::pair{"completion", &example.completion}}) {
      auto it = value.find(key);
      std::string field = std::string("/") + key;
      if (it == value.end()) {
        Add("missing_field", Severity::kError, record, offset, field,
            std::string("record has no \"") + key + "\" field");
        ok = false;
      } else if (!it->is_string()) {
        Add("wrong_type", Severity::kError, record, offset, field,
            std::string("\"") + key + "\" must be a string, not " + it->type_name());
        ok = false;
      } else {
        *target = it->get<std::string>();
      }
    }
    for (const auto& item : value.items()) {
      if (item.key() != "prompt" && item.key() != "completion") {
        Add("unknown_field", Severity::kWarning, record, offset, "/" + item.key(),
            "field \"" + item.key() + "\" is not used and will be ignored");
      }
    }
    if (!ok) return;
    if (example.completion.empty()) {
      Add("empty_field", Severity::kError, record, offset, "/completion",
          "\"completion\" is empty: there is nothing to learn from this record");
      return;
    }
    if (example.prompt.empty()) {
      Add("empty_field", Severity::kWarning, record, offset, "/prompt", "\"prompt\" is empty");
    }
    out_.report.token_estimate +=
        static_cast<int64_t>(example.prompt.size() + example.completion.size() + 1);
    out_.examples.push_back(std::move(example));
  }

  std::string_view bytes_;
  LineCursor cursor_;
  ParsedDataset out_;
};

}  // namespace

std::string_view DatasetFormatName(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::kPromptCompletion:
      return "prompt_completion";
    case DatasetFormat::kChat:
      return "chat";
    case DatasetFormat::kText:
      return "text";
    case DatasetFormat::kUnspecified:
      break;
  }
  return "unspecified";
}

ParsedDataset ParseDataset(std::string_view bytes, DatasetFormat declared) {
  return Validator(bytes).Run(declared);
}

int64_t ValidationCount(int64_t n, double validation_fraction) {
  if (n < 2 || validation_fraction <= 0) return 0;
  auto count = static_cast<int64_t>(std::llround(static_cast<double>(n) * validation_fraction));
  return std::clamp<int64_t>(count, 1, n - 1);
}

Split SplitExamples(int64_t n, double validation_fraction, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  // Fisher-Yates with mt19937_64: unlike std::shuffle, identical everywhere.
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  int64_t n_val = ValidationCount(n, validation_fraction);
  Split split;
  split.validation.assign(order.begin(), order.begin() + n_val);
  split.train.assign(order.begin() + n_val, order.end());
  std::sort(split.validation.begin(), split.validation.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

}  // namespace tuneforge
