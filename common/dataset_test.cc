#include "common/dataset.h"

#include <set>

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
  EXPECT_EQ(d.report.token_estimate, (15 + 8 + 1) + (16 + 45 + 1));
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
  EXPECT_EQ(bad.report.problems[0].code, "not_json");
}

TEST(ParseDatasetTest, ListsAtMostTheLimitButCountsAll) {
  std::string text;
  for (int i = 0; i < 1500; ++i) text += "not json\n";
  ParsedDataset d = ParseDataset(text);
  EXPECT_EQ(d.report.error_count, 1500);
  EXPECT_EQ(d.report.problems.size(), kMaxListedProblems);
}

TEST(SplitTest, DeterministicDisjointAndComplete) {
  Split a = SplitExamples(100, 0.1, 7);
  Split b = SplitExamples(100, 0.1, 7);
  Split c = SplitExamples(100, 0.1, 8);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_NE(a.validation, c.validation);
  EXPECT_EQ(a.validation.size(), 10u);
  EXPECT_EQ(a.train.size(), 90u);
  std::set<int64_t> all(a.train.begin(), a.train.end());
  all.insert(a.validation.begin(), a.validation.end());
  EXPECT_EQ(all.size(), 100u);
  EXPECT_EQ(ValidationCount(1, 0.5), 0);
  EXPECT_EQ(ValidationCount(2, 0.01), 1);
  EXPECT_EQ(ValidationCount(10, 0.99), 9);
}

}  // namespace
}  // namespace tuneforge
