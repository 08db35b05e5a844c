#include "common/dataset_validator.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/json_view.h"
#include "common/utf8.h"

namespace tuneforge {
namespace {

using json = nlohmann::json;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return IsSpace(c); });
}

// Where a record starts in the file.
struct Position {
  int64_t line = 1;
  int64_t column = 1;
};

// Position of `offset` inside `text`, which starts at `start`.
Position Within(Position start, std::string_view text, size_t offset) {
  Position p = start;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++p.line;
      p.column = 1;
    } else {
      ++p.column;
    }
  }
  return p;
}

enum class Mode { kStart, kJsonl, kArray, kAfterArray, kPlainText, kIgnoreRest };

}  // namespace

struct DatasetValidator::State {
  ValidatorOptions options;
  ParsedDataset out;
  Mode mode = Mode::kStart;
  int64_t fed = 0;           // bytes seen so far
  Position at;               // position of the next byte to scan
  std::string record;        // bytes of the record being read
  Position record_start;
  bool record_too_long = false;
  int64_t records = 0;
  DatasetFormat established = DatasetFormat::kUnspecified;
  int64_t established_by = 0;  // record that fixed the format
  // Array scanning.
  bool after_comma = false;  // after ',' a record must come, not the closing bracket
  int depth = 0;
  bool in_string = false;
  bool escape = false;
  // Statistics.
#if TUNEFORGE_HAVE_SIMDJSON
  simdjson::dom::parser simd_parser;  // reused: its buffers grow to the largest record
#endif
  std::vector<int32_t> token_counts;
  // Duplicate detection: 16 bytes per valid record, compared at Finish().
  struct Seen {
    uint64_t key;
    int32_t record;
    int32_t line;
  };
  std::vector<Seen> seen;
  bool finished = false;

  void Problem(std::string code, Severity severity, int64_t rec, Position pos, std::string field,
               std::string message) {
    DatasetReport& r = out.report;
    (severity == Severity::kError ? r.error_count : r.warning_count)++;
    r.problem_counts[code]++;
    if (r.problems.size() >= kMaxListedProblems) return;
    // Messages and field names may quote the user's bytes: they travel in
    // protobuf strings and JSON, which must be valid UTF-8.
    r.problems.push_back(DatasetProblem{std::move(code), severity, rec, pos.line, pos.column,
                                        EscapeInvalidUtf8(field), EscapeInvalidUtf8(message)});
  }

  void Advance(char c) {
    if (c == '\n') {
      ++at.line;
      at.column = 1;
    } else {
      ++at.column;
    }
  }

  // Appends to the current record, unless it has grown too long.
  void Take(std::string_view bytes) {
    if (record_too_long) return;
    if (static_cast<int64_t>(record.size() + bytes.size()) > options.max_record_bytes) {
      record_too_long = true;
      record.clear();
      record.shrink_to_fit();
      return;
    }
    record.append(bytes);
  }

  void EndRecord(bool is_text_document) {
    ++records;
    if (record_too_long) {
      Problem("record_too_long", Severity::kError, records, record_start, "",
              "record is longer than " + std::to_string(options.max_record_bytes) + " bytes" +
                  (is_text_document ? "; split the documents with a separator" : ""));
    } else if (is_text_document) {
      TextDocument();
    } else {
      JsonRecord();
    }
    record.clear();
    record_too_long = false;
  }

  void TextDocument() {
    if (size_t bad = InvalidUtf8At(record); bad != std::string_view::npos) {
      Problem("invalid_utf8", Severity::kError, records, Within(record_start, record, bad), "",
              "the document is not valid UTF-8 here");
      return;
    }
    Example e;
    e.format = DatasetFormat::kText;
    e.text = record;
    Accept(std::move(e), records);
  }

  void JsonRecord() {
#if TUNEFORGE_HAVE_SIMDJSON
    simdjson::dom::element doc;
    if (simd_parser.parse(record.data(), record.size()).get(doc) == simdjson::SUCCESS) {
      CheckRecord(SimdjsonView(doc));
      return;
    }
    // Not valid JSON: nlohmann says where and why.
#endif
    // Not UTF-8: say where the first bad byte is (a file saved as Latin-1
    // or Windows-1252), not where a JSON parser gave up.
    if (size_t bad = InvalidUtf8At(record); bad != std::string_view::npos) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const auto byte = static_cast<unsigned char>(record[bad]);
      Problem("invalid_utf8", Severity::kError, records, Within(record_start, record, bad), "",
              std::string("the record is not valid UTF-8 here (byte 0x") + kHex[byte >> 4] +
                  kHex[byte & 15] + "); save the file as UTF-8");
      return;
    }
    json value;
    try {
      value = json::parse(record);
    } catch (const json::parse_error& e) {
      const size_t offset = e.byte > 0 ? std::min<size_t>(e.byte - 1, record.size()) : 0;
      std::string what = e.what();
      size_t at_msg = what.find("parse error");
      Problem("not_json", Severity::kError, records, Within(record_start, record, offset), "",
              "record is not valid JSON: " +
                  (at_msg == std::string::npos ? what : what.substr(at_msg)));
      return;
    } catch (const json::exception& e) {  // e.g. a number out of range
      Problem("not_json", Severity::kError, records, record_start, "",
              std::string("record cannot be read: ") + e.what());
      return;
    }
    CheckRecord(NlohmannView(value));
  }

  template <typename V>
  void CheckRecord(const V& value) {
    if (!value.IsObject()) {
      Problem("wrong_type", Severity::kError, records, record_start, "",
              std::string("record must be a JSON object, not ") + value.TypeName());
      return;
    }
    DatasetFormat kind = value.Find("messages")                        ? DatasetFormat::kChat
                         : value.Find("text")                          ? DatasetFormat::kText
                         : value.Find("prompt") || value.Find("completion")
                             ? DatasetFormat::kPromptCompletion
                             : DatasetFormat::kUnspecified;
    if (kind == DatasetFormat::kUnspecified) {
      Problem("unknown_record", Severity::kError, records, record_start, "",
              "record has none of \"prompt\"/\"completion\", \"messages\" or \"text\"");
      return;
    }
    if (established == DatasetFormat::kUnspecified) {
      established = kind;
      established_by = records;
      out.report.format = kind;
    } else if (kind != established) {
      Problem("mixed_format", Severity::kError, records, record_start, "",
              "record " + std::to_string(records) + " is a " +
                  std::string(DatasetFormatName(kind)) + " record, but the file is " +
                  std::string(DatasetFormatName(established)) +
                  (established_by > 0 ? " (from record " + std::to_string(established_by) + ")"
                                      : " (declared)") +
                  "; one file holds one kind of record");
      return;
    }
    Example e;
    e.format = kind;
    bool ok = kind == DatasetFormat::kChat   ? Chat(value, e)
              : kind == DatasetFormat::kText ? Text(value, e)
                                             : PromptCompletion(value, e);
    if (ok) Accept(std::move(e), records);
  }

  // A string field; reports it missing or mistyped.
  template <typename V>
  bool StringField(const V& object, const std::string& key, const std::string& pointer,
                   std::string* out_value) {
    std::optional<V> field = object.Find(key);
    if (!field) {
      Problem("missing_field", Severity::kError, records, record_start, pointer,
              "record has no \"" + key + "\" field");
      return false;
    }
    if (!field->IsString()) {
      Problem("wrong_type", Severity::kError, records, record_start, pointer,
              "\"" + key + "\" must be a string, not " + field->TypeName());
      return false;
    }
    *out_value = std::string(field->String());
    return true;
  }

  template <typename V>
  void UnknownKeys(const V& object, std::initializer_list<const char*> known,
                   const std::string& prefix) {
    object.ForEachKey([&](std::string_view key) {
      if (std::none_of(known.begin(), known.end(), [&](const char* k) { return key == k; })) {
        const std::string name(key);
        Problem("unknown_field", Severity::kWarning, records, record_start, prefix + "/" + name,
                "field \"" + name + "\" is not used and will be ignored");
      }
    });
  }

  template <typename V>
  bool PromptCompletion(const V& value, Example& e) {
    bool ok = StringField(value, "prompt", "/prompt", &e.prompt);
    ok = StringField(value, "completion", "/completion", &e.completion) && ok;
    UnknownKeys(value, {"prompt", "completion"}, "");
    if (!ok) return false;
    if (e.completion.empty()) {
      Problem("empty_field", Severity::kError, records, record_start, "/completion",
              "\"completion\" is empty: there is nothing to learn from this record");
      return false;
    }
    if (e.prompt.empty()) {
      ++out.report.empty_prompt_count;
      Problem("empty_field", Severity::kWarning, records, record_start, "/prompt",
              "\"prompt\" is empty");
    }
    return true;
  }

  template <typename V>
  bool Text(const V& value, Example& e) {
    bool ok = StringField(value, "text", "/text", &e.text);
    UnknownKeys(value, {"text"}, "");
    if (ok && IsBlank(e.text)) {
      Problem("empty_field", Severity::kError, records, record_start, "/text",
              "\"text\" is empty");
      return false;
    }
    return ok;
  }

  template <typename V>
  bool Chat(const V& value, Example& e) {
    UnknownKeys(value, {"messages"}, "");
    const V messages = *value.Find("messages");
    if (!messages.IsArray() || messages.Size() == 0) {
      Problem(messages.IsArray() ? "empty_field" : "wrong_type", Severity::kError, records,
              record_start, "/messages", "\"messages\" must be a non-empty array of messages");
      return false;
    }
    bool ok = true;
    bool trained_turn = false;
    const size_t n = messages.Size();
    for (size_t i = 0; i < n; ++i) {
      const std::string at = "/messages/" + std::to_string(i);
      const V m = messages.At(i);
      if (!m.IsObject()) {
        Problem("wrong_type", Severity::kError, records, record_start, at,
                "a message must be an object with \"role\" and \"content\"");
        ok = false;
        continue;
      }
      ChatMessage message;
      bool good = StringField(m, "role", at + "/role", &message.role);
      good = StringField(m, "content", at + "/content", &message.content) && good;
      UnknownKeys(m, {"role", "content", "weight"}, at);
      if (good && message.role != "system" && message.role != "user" &&
          message.role != "assistant") {
        Problem("unknown_role", Severity::kError, records, record_start, at + "/role",
                "role \"" + message.role + "\" is not one of system, user, assistant");
        good = false;
      }
      if (std::optional<V> w = m.Find("weight")) {
        if (!w->IsNumber() || (w->Number() != 0 && w->Number() != 1)) {
          Problem("invalid_value", Severity::kError, records, record_start, at + "/weight",
                  "\"weight\" must be 0 or 1");
          good = false;
        } else {
          message.trained = w->Number() == 1;
        }
      }
      if (good && message.role == "assistant" && message.trained) trained_turn = true;
      ok = ok && good;
      e.messages.push_back(std::move(message));
    }
    out.report.turn_count += static_cast<int64_t>(n);
    if (ok && !trained_turn) {
      Problem("no_assistant_turn", Severity::kError, records, record_start, "/messages",
              "the conversation has no assistant message to learn from");
      return false;
    }
    return ok;
  }

  void Accept(Example e, int64_t record_number) {
    const int64_t tokens = ByteTokenCount(e);
    if (options.max_seq_len > 0 && tokens > options.max_seq_len) ++out.report.over_max_seq_len;
    seen.push_back({ExampleKey(e), static_cast<int32_t>(std::min<int64_t>(record_number, INT32_MAX)),
                    static_cast<int32_t>(std::min<int64_t>(record_start.line, INT32_MAX))});
    token_counts.push_back(static_cast<int32_t>(std::min<int64_t>(tokens, INT32_MAX)));
    out.report.token_estimate += tokens;
    ++out.report.example_count;
    if (options.keep_examples) out.examples.push_back(std::move(e));
  }

  void FeedJsonl(std::string_view chunk) {
    while (!chunk.empty()) {
      if (record.empty() && !record_too_long) record_start = at;
      const void* nl = std::memchr(chunk.data(), '\n', chunk.size());
      const size_t n = nl ? static_cast<const char*>(nl) - chunk.data() : chunk.size();
      Take(chunk.substr(0, n));
      at.column += static_cast<int64_t>(n);  // no newline inside
      if (!nl) return;
      Advance('\n');
      EndJsonlLine();
      chunk.remove_prefix(n + 1);
    }
  }

  void EndJsonlLine() {
    if (!record.empty() && record.back() == '\r') record.pop_back();
    size_t first = 0;
    while (first < record.size() && IsSpace(record[first])) ++first;
    if (first == record.size() && !record_too_long) {
      record.clear();
      return;  // blank line
    }
    record.erase(0, first);
    record_start.column += static_cast<int64_t>(first);
    EndRecord(false);
  }

  void FeedArray(std::string_view chunk) {
    for (size_t i = 0; i < chunk.size(); ++i) {
      const char c = chunk[i];
      if (mode == Mode::kAfterArray) {
        if (!IsSpace(c)) {
          Problem("trailing_data", Severity::kError, 0, at, "",
                  "unexpected data after the closing ']' of the JSON array");
          mode = Mode::kIgnoreRest;
          return;
        }
        Advance(c);
        continue;
      }
      const bool in_element = !record.empty() || record_too_long;
      if (!in_element) {
        if (IsSpace(c)) {
          Advance(c);
          continue;
        }
        if (c == ']' && !after_comma) {
          mode = Mode::kAfterArray;
          Advance(c);
          continue;
        }
        if (c == ',' || c == ']') {
          Problem("not_json", Severity::kError, 0, at, "",
                  "a record is missing before this '" + std::string(1, c) + "'");
          if (c == ']') mode = Mode::kAfterArray;
          after_comma = true;
          Advance(c);
          continue;
        }
        record_start = at;
        depth = 0;
        in_string = false;
        escape = false;
      }
      bool ends = false;
      if (in_string) {
        if (escape) {
          escape = false;
        } else if (c == '\\') {
          escape = true;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && depth > 0) {
        --depth;
      } else if (depth == 0 && (c == ',' || c == ']')) {
        ends = true;
      }
      if (!ends) {
        Take(std::string_view(&c, 1));
        Advance(c);
        continue;
      }
      while (!record.empty() && IsSpace(record.back())) record.pop_back();
      EndRecord(false);
      if (c == ']') {
        mode = Mode::kAfterArray;
      } else {
        after_comma = true;
      }
      Advance(c);
    }
  }

  void FeedPlainText(std::string_view chunk) {
    if (record.empty() && !record_too_long) record_start = at;
    Take(chunk);
    for (char c : chunk) Advance(c);
    if (options.separator.empty() || record_too_long) return;
    size_t pos;
    while ((pos = record.find(options.separator)) != std::string::npos) {
      std::string rest = record.substr(pos + options.separator.size());
      Position rest_start = Within(record_start, record, pos + options.separator.size());
      record.resize(pos);
      if (!IsBlank(record)) {
        EndRecord(true);
      } else {
        record.clear();
      }
      record = std::move(rest);
      record_start = rest_start;
    }
  }

  void Feed(std::string_view chunk) {
    fed += static_cast<int64_t>(chunk.size());
    if (mode == Mode::kStart) {
      record.append(chunk);  // undecided: hold the first bytes
      std::string_view head = record;
      size_t skip = 0;
      if (head.size() < 3 && std::string_view("\xEF\xBB\xBF").substr(0, head.size()) == head) {
        return;  // may be a BOM still
      }
      if (head.substr(0, 3) == "\xEF\xBB\xBF") skip = 3;
      while (skip < head.size() && IsSpace(head[skip])) ++skip;
      if (skip == head.size()) return;  // only whitespace so far
      std::string held = std::move(record);
      record.clear();
      const char first = held[skip];
      if (options.declared == DatasetFormat::kText && first != '[' && first != '{') {
        mode = Mode::kPlainText;
        FeedPlainText(held);
        return;
      }
      for (size_t i = 0; i < skip; ++i) Advance(held[i]);
      if (first == '[') {
        mode = Mode::kArray;
        Advance('[');
        FeedArray(std::string_view(held).substr(skip + 1));
      } else if (first == '{') {
        mode = Mode::kJsonl;
        FeedJsonl(std::string_view(held).substr(skip));
      } else {
        Problem("not_json", Severity::kError, 0, at, "",
                "the file is neither a JSON array nor JSONL; to upload plain text documents, "
                "declare the format text");
        mode = Mode::kIgnoreRest;
      }
      return;
    }
    switch (mode) {
      case Mode::kJsonl: FeedJsonl(chunk); break;
      case Mode::kArray:
      case Mode::kAfterArray: FeedArray(chunk); break;
      case Mode::kPlainText: FeedPlainText(chunk); break;
      case Mode::kStart:
      case Mode::kIgnoreRest: break;
    }
  }

  // Every record equal to an earlier one, in file order.
  void ReportDuplicates() {
    std::stable_sort(seen.begin(), seen.end(),
                     [](const Seen& a, const Seen& b) { return a.key < b.key; });
    std::vector<Seen> repeats;
    for (size_t i = 1; i < seen.size(); ++i) {
      if (seen[i].key == seen[i - 1].key) repeats.push_back(seen[i]);
    }
    std::sort(repeats.begin(), repeats.end(),
              [](const Seen& a, const Seen& b) { return a.record < b.record; });
    for (const Seen& d : repeats) {
      ++out.report.duplicate_count;
      Problem("duplicate", Severity::kWarning, d.record, Position{d.line, 1}, "",
              "record repeats an earlier one exactly");
    }
    seen.clear();
    seen.shrink_to_fit();
  }

  ParsedDataset Finish() {
    finished = true;
    switch (mode) {
      case Mode::kJsonl:
        if (!record.empty() || record_too_long) EndJsonlLine();
        break;
      case Mode::kArray:
        if (!record.empty() || record_too_long) EndRecord(false);
        Problem("truncated", Severity::kError, 0, at, "", "the JSON array is not closed with ']'");
        break;
      case Mode::kPlainText:
        if (!IsBlank(record) || record_too_long) EndRecord(true);
        break;
      case Mode::kStart:
      case Mode::kAfterArray:
      case Mode::kIgnoreRest:
        break;
    }
    ReportDuplicates();
    DatasetReport& r = out.report;
    if (mode == Mode::kPlainText) r.format = DatasetFormat::kText;
    if (r.format == DatasetFormat::kUnspecified) r.format = options.declared;
    if (records == 0 && r.error_count == 0) {
      Problem("empty_file", Severity::kError, 0, at, "", "the file holds no records");
    }
    if (!token_counts.empty()) {
      std::vector<int32_t>& t = token_counts;
      auto pct = [&](double q) {
        auto k = static_cast<size_t>(q * static_cast<double>(t.size() - 1) + 0.5);
        std::nth_element(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(k), t.end());
        return static_cast<int64_t>(t[k]);
      };
      r.tokens.min = *std::min_element(t.begin(), t.end());
      r.tokens.max = *std::max_element(t.begin(), t.end());
      r.tokens.p50 = pct(0.5);
      r.tokens.p95 = pct(0.95);
      r.tokens.mean = static_cast<double>(r.token_estimate) / static_cast<double>(t.size());
    }
    return std::move(out);
  }
};

DatasetValidator::DatasetValidator(ValidatorOptions options) : s_(std::make_unique<State>()) {
  s_->options = std::move(options);
  if (s_->options.declared != DatasetFormat::kUnspecified) {
    s_->established = s_->options.declared;
    s_->out.report.format = s_->options.declared;
  }
}

DatasetValidator::~DatasetValidator() = default;

void DatasetValidator::Feed(std::string_view chunk) {
  if (!s_->finished) s_->Feed(chunk);
}

ParsedDataset DatasetValidator::Finish() { return s_->Finish(); }

ParsedDataset ParseDataset(std::string_view bytes, ValidatorOptions options) {
  DatasetValidator v(std::move(options));
  v.Feed(bytes);
  return v.Finish();
}

}  // namespace tuneforge
