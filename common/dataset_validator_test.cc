#include "common/dataset_validator.h"

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

const DatasetProblem* FindProblem(const DatasetReport& report, const std::string& code) {
  for (const auto& p : report.problems) {
    if (p.code == code) return &p;
  }
  return nullptr;
}

TEST(ParseDatasetTest, SeedFormatJsonArray) {
  ParsedDataset d = ParseDataset(R"([
  {"prompt": "How much leave?", "completion": "25 days."},
  {"prompt": "Who approves it?", "completion": "Your manager, with \"quotes\" and ] brackets }."}
])");
  EXPECT_EQ(d.report.error_count, 0);
  ASSERT_EQ(d.examples.size(), 2u);
  EXPECT_EQ(d.examples[0].prompt, "How much leave?");
  EXPECT_EQ(d.examples[1].completion, "Your manager, with \"quotes\" and ] brackets }.");
  EXPECT_EQ(d.report.example_count, 2);
  EXPECT_EQ(d.report.format, DatasetFormat::kPromptCompletion);
  // "prompt completion" + end-of-text, per example.
  EXPECT_EQ(d.report.token_estimate, (15 + 1 + 8 + 1) + (16 + 1 + 45 + 1));
}

TEST(ParseDatasetTest, Jsonl) {
  ParsedDataset d = ParseDataset(
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"c\", \"completion\": \"d\"}\n");
  EXPECT_EQ(d.report.error_count, 0);
  ASSERT_EQ(d.examples.size(), 2u);
  EXPECT_EQ(d.examples[1].prompt, "c");
}

TEST(ParseDatasetTest, ReportsEveryBrokenJsonlRecordWithItsLine) {
  ParsedDataset d = ParseDataset(
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
      "{\"prompt\": \"a\", \"completion\": }\n"
      "{\"prompt\": \"a\"}\n"
      "{\"prompt\": 7, \"completion\": \"x\", \"extra\": 1}\n"
      "[1, 2]\n");
  EXPECT_EQ(d.examples.size(), 1u);
  EXPECT_EQ(d.report.error_count, 4);
  EXPECT_EQ(d.report.warning_count, 1);
  const DatasetProblem* not_json = FindProblem(d.report, "not_json");
  ASSERT_NE(not_json, nullptr);
  EXPECT_EQ(not_json->record, 2);
  EXPECT_EQ(not_json->line, 2);
  EXPECT_EQ(not_json->column, 31);  // the '}' where a value was expected
  const DatasetProblem* missing = FindProblem(d.report, "missing_field");
  ASSERT_NE(missing, nullptr);
  EXPECT_EQ(missing->record, 3);
  EXPECT_EQ(missing->line, 3);
  EXPECT_EQ(missing->field, "/completion");
  const DatasetProblem* wrong = FindProblem(d.report, "wrong_type");
  ASSERT_NE(wrong, nullptr);
  EXPECT_EQ(wrong->line, 4);
  EXPECT_EQ(wrong->field, "/prompt");
  const DatasetProblem* unknown = FindProblem(d.report, "unknown_field");
  ASSERT_NE(unknown, nullptr);
  EXPECT_EQ(unknown->severity, Severity::kWarning);
  EXPECT_EQ(unknown->field, "/extra");
  EXPECT_EQ(d.report.problems.back().line, 5);  // the array is not an object
  EXPECT_EQ(d.report.problems.back().code, "wrong_type");
}

TEST(ParseDatasetTest, JsonArrayRecordsHaveLinesAndColumns) {
  ParsedDataset d = ParseDataset(
      "[\n"
      "  {\"prompt\": \"a\", \"completion\": \"b\"},\n"
      "  {\"prompt\": \"a\", \"completion\": \"\"},\n"
      "  {\"completion\": \"b\"}\n"
      "]\n");
  EXPECT_EQ(d.examples.size(), 1u);
  ASSERT_EQ(d.report.problems.size(), 2u);
  EXPECT_EQ(d.report.problems[0].code, "empty_field");
  EXPECT_EQ(d.report.problems[0].record, 2);
  EXPECT_EQ(d.report.problems[0].line, 3);
  EXPECT_EQ(d.report.problems[0].column, 3);
  EXPECT_EQ(d.report.problems[1].code, "missing_field");
  EXPECT_EQ(d.report.problems[1].record, 3);
  EXPECT_EQ(d.report.problems[1].line, 4);
  EXPECT_EQ(d.report.problems[1].field, "/prompt");
}

TEST(ParseDatasetTest, TruncatedArrayAndTrailingData) {
  ParsedDataset truncated = ParseDataset("[{\"prompt\": \"a\", \"completion\": \"b\"},\n");
  ASSERT_NE(FindProblem(truncated.report, "truncated"), nullptr);
  EXPECT_EQ(FindProblem(truncated.report, "truncated")->line, 2);

  ParsedDataset trailing = ParseDataset("[{\"prompt\": \"a\", \"completion\": \"b\"}] x");
  ASSERT_NE(FindProblem(trailing.report, "trailing_data"), nullptr);
  EXPECT_EQ(FindProblem(trailing.report, "trailing_data")->column, 38);
}

TEST(ParseDatasetTest, EmptyAndInvalidUtf8) {
  EXPECT_NE(FindProblem(ParseDataset("  \n").report, "empty_file"), nullptr);
  EXPECT_NE(FindProblem(ParseDataset("[]").report, "empty_file"), nullptr);
  ParsedDataset bad = ParseDataset("{\"prompt\": \"\xff\", \"completion\": \"b\"}\n");
  EXPECT_EQ(bad.report.error_count, 1);
  EXPECT_EQ(bad.report.problems[0].code, "invalid_utf8");
}

TEST(ParseDatasetTest, ListsAtMostTheLimitButCountsAll) {
  std::string text;
  for (int i = 0; i < 1500; ++i) text += "{not json\n";
  ParsedDataset d = ParseDataset(text);
  EXPECT_EQ(d.report.error_count, 1500);
  EXPECT_EQ(d.report.problems.size(), kMaxListedProblems);
  EXPECT_EQ(d.report.problem_counts.at("not_json"), 1500);
  EXPECT_EQ(d.report.problems.back().line, 1000);
}

TEST(ParseDatasetTest, NumberOutOfRangeIsAProblemNotACrash) {
  // Found by the fuzzer: nlohmann throws out_of_range, not parse_error, here.
  ParsedDataset d = ParseDataset("{\"prompt\": 1e999999, \"completion\": \"b\"}\n");
  ASSERT_EQ(d.report.error_count, 1);
  EXPECT_EQ(d.report.problems[0].code, "not_json");
}

TEST(ParseDatasetTest, UnknownRecordShape) {
  ParsedDataset d = ParseDataset("\n  {\"question\": \"a\", \"answer\": \"b\"}\n");
  ASSERT_EQ(d.report.error_count, 1);
  const DatasetProblem& p = d.report.problems[0];
  EXPECT_EQ(p.code, "unknown_record");
  EXPECT_EQ(p.record, 1);
  EXPECT_EQ(p.line, 2);
  EXPECT_EQ(p.column, 3);
  EXPECT_EQ(d.report.tokenizer, "byte");
}

TEST(ParseDatasetTest, PlainTextNeedsTheTextFormat) {
  ParsedDataset d = ParseDataset("Leave policy.\nEveryone gets 25 days.\n");
  ASSERT_EQ(d.report.error_count, 1);
  EXPECT_EQ(d.report.problems[0].code, "not_json");
  EXPECT_NE(d.report.problems[0].message.find("declare the format text"), std::string::npos);
}

TEST(ParseDatasetTest, ChatRecords) {
  ParsedDataset d = ParseDataset(
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Leave?"}, {"role": "assistant", "content": "25 days."}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x", "weight": 2}]})"
      "\n"
      R"({"messages": []})"
      "\n");
  EXPECT_EQ(d.report.format, DatasetFormat::kChat);
  ASSERT_EQ(d.examples.size(), 1u);
  EXPECT_EQ(d.examples[0].messages.size(), 3u);
  EXPECT_EQ(d.report.turn_count, 3 + 2 + 2 + 2);
  ASSERT_NE(FindProblem(d.report, "unknown_role"), nullptr);
  EXPECT_EQ(FindProblem(d.report, "unknown_role")->field, "/messages/1/role");
  EXPECT_EQ(FindProblem(d.report, "unknown_role")->line, 2);
  ASSERT_NE(FindProblem(d.report, "no_assistant_turn"), nullptr);
  EXPECT_EQ(FindProblem(d.report, "no_assistant_turn")->record, 3);
  ASSERT_NE(FindProblem(d.report, "invalid_value"), nullptr);
  EXPECT_EQ(FindProblem(d.report, "invalid_value")->field, "/messages/1/weight");
  ASSERT_NE(FindProblem(d.report, "empty_field"), nullptr);
  EXPECT_EQ(FindProblem(d.report, "empty_field")->record, 5);
  EXPECT_EQ(d.report.error_count, 4);
}

TEST(ParseDatasetTest, MixedFileNamesTheRecordOfTheOtherKind) {
  ParsedDataset d = ParseDataset(
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
      "{\"text\": \"a document\"}\n"
      "{\"prompt\": \"c\", \"completion\": \"d\"}\n");
  EXPECT_EQ(d.report.format, DatasetFormat::kPromptCompletion);
  EXPECT_EQ(d.examples.size(), 2u);
  ASSERT_EQ(d.report.error_count, 1);
  const DatasetProblem& p = d.report.problems[0];
  EXPECT_EQ(p.code, "mixed_format");
  EXPECT_EQ(p.record, 2);
  EXPECT_EQ(p.line, 2);
  EXPECT_NE(p.message.find("record 2 is a text record, but the file is prompt_completion "
                           "(from record 1)"),
            std::string::npos)
      << p.message;

  ValidatorOptions chat;
  chat.declared = DatasetFormat::kChat;
  ParsedDataset declared = ParseDataset("{\"prompt\": \"a\", \"completion\": \"b\"}\n", chat);
  ASSERT_EQ(declared.report.error_count, 1);
  EXPECT_NE(declared.report.problems[0].message.find("(declared)"), std::string::npos);
}

TEST(ParseDatasetTest, TextRecordsAndPlainText) {
  ParsedDataset records = ParseDataset("{\"text\": \"Doc one.\"}\n{\"text\": \"  \"}\n");
  EXPECT_EQ(records.report.format, DatasetFormat::kText);
  EXPECT_EQ(records.examples.size(), 1u);
  EXPECT_EQ(records.report.problem_counts.at("empty_field"), 1);

  ValidatorOptions text;
  text.declared = DatasetFormat::kText;
  ParsedDataset whole = ParseDataset("# Handbook\n\nLeave is 25 days.\n", text);
  ASSERT_EQ(whole.examples.size(), 1u);
  EXPECT_EQ(whole.examples[0].text, "# Handbook\n\nLeave is 25 days.\n");
  EXPECT_EQ(whole.report.format, DatasetFormat::kText);

  text.separator = "\n---\n";
  ParsedDataset split = ParseDataset("Doc one.\n---\n\n---\nDoc \xff two.\n---\nDoc three.", text);
  ASSERT_EQ(split.examples.size(), 2u);
  EXPECT_EQ(split.examples[0].text, "Doc one.");
  EXPECT_EQ(split.examples[1].text, "Doc three.");
  ASSERT_EQ(split.report.error_count, 1);
  EXPECT_EQ(split.report.problems[0].code, "invalid_utf8");
  EXPECT_EQ(split.report.problems[0].line, 5);
  EXPECT_EQ(split.report.problems[0].column, 5);
}

TEST(ParseDatasetTest, StatisticsOfTheReport) {
  std::string text;
  for (int i = 1; i <= 20; ++i) {
    // Prompt "p", completion of i bytes: i + 3 tokens ("p " + completion + end).
    text += "{\"prompt\": \"p\", \"completion\": \"" + std::string(i, 'x') + "\"}\n";
  }
  text += "{\"prompt\": \"p\", \"completion\": \"x\"}\n";   // a duplicate of record 1
  text += "{\"prompt\": \"\", \"completion\": \"y\"}\n";     // empty prompt: 2 tokens
  ValidatorOptions options;
  options.max_seq_len = 20;
  ParsedDataset d = ParseDataset(text, options);
  EXPECT_EQ(d.report.example_count, 22);
  EXPECT_EQ(d.report.duplicate_count, 1);
  EXPECT_EQ(d.report.empty_prompt_count, 1);
  EXPECT_EQ(d.report.tokens.min, 2);
  EXPECT_EQ(d.report.tokens.max, 23);
  EXPECT_EQ(d.report.over_max_seq_len, 3);  // 21, 22, 23 tokens
  EXPECT_EQ(d.report.tokens.p50, 13);
  EXPECT_EQ(d.report.tokens.p95, 22);
  EXPECT_DOUBLE_EQ(d.report.tokens.mean, double(d.report.token_estimate) / 22);
  EXPECT_EQ(d.report.warning_count, 2);  // the duplicate and the empty prompt
  EXPECT_EQ(FindProblem(d.report, "duplicate")->record, 21);
}

TEST(ParseDatasetTest, RecordTooLongAndTrailingComma) {
  ValidatorOptions small;
  small.max_record_bytes = 40;
  ParsedDataset d = ParseDataset(
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
      "{\"prompt\": \"" + std::string(100, 'a') + "\", \"completion\": \"b\"}\n"
      "{\"prompt\": \"c\", \"completion\": \"d\"}\n", small);
  EXPECT_EQ(d.examples.size(), 2u);
  ASSERT_NE(FindProblem(d.report, "record_too_long"), nullptr);
  EXPECT_EQ(FindProblem(d.report, "record_too_long")->line, 2);

  ParsedDataset comma = ParseDataset("[{\"prompt\": \"a\", \"completion\": \"b\"},]");
  EXPECT_EQ(comma.examples.size(), 1u);
  EXPECT_EQ(comma.report.error_count, 1);
  EXPECT_EQ(comma.report.problems[0].column, 37);  // the "]" after the comma
}

// Chunk boundaries never change the result: byte-by-byte feeding gives the
// same report as the whole file at once.
TEST(ParseDatasetTest, ChunkingDoesNotMatter) {
  ValidatorOptions text;
  text.declared = DatasetFormat::kText;
  text.separator = "\n===\n";
  const std::vector<std::pair<std::string, ValidatorOptions>> files = {
      {"\xEF\xBB\xBF[\n {\"prompt\": \"a,]}\\\"\", \"completion\": \"b\"},\n {\"prompt\": 1},\n"
       " [\"x\"], {\"prompt\": \"c\", \"completion\": \"d\"}\n] x",
       {}},
      {"{\"prompt\": \"a\", \"completion\": \"b\"}\r\n\n{bad\n{\"text\": \"t\"}", {}},
      {"one\n===\ntwo\n===\n\xff\n===\nthree", text},
  };
  for (const auto& [bytes, options] : files) {
    ParsedDataset whole = ParseDataset(bytes, options);
    DatasetValidator v(options);
    for (char c : bytes) v.Feed(std::string_view(&c, 1));
    ParsedDataset pieces = v.Finish();
    EXPECT_EQ(pieces.examples.size(), whole.examples.size()) << bytes;
    ASSERT_EQ(pieces.report.problems.size(), whole.report.problems.size()) << bytes;
    for (size_t i = 0; i < whole.report.problems.size(); ++i) {
      const DatasetProblem& a = whole.report.problems[i];
      const DatasetProblem& b = pieces.report.problems[i];
      EXPECT_EQ(std::tie(a.code, a.record, a.line, a.column, a.field),
                std::tie(b.code, b.record, b.line, b.column, b.field))
          << bytes << " problem " << i;
    }
    EXPECT_GT(whole.report.error_count, 0) << bytes;
  }
}

}  // namespace
}  // namespace tuneforge
