#include "common/report_proto.h"

namespace tuneforge {

v1::DatasetFormat ToProto(DatasetFormat f) {
  switch (f) {
    case DatasetFormat::kPromptCompletion: return v1::DATASET_FORMAT_PROMPT_COMPLETION;
    case DatasetFormat::kChat: return v1::DATASET_FORMAT_CHAT;
    case DatasetFormat::kText: return v1::DATASET_FORMAT_TEXT;
    case DatasetFormat::kUnspecified: break;
  }
  return v1::DATASET_FORMAT_UNSPECIFIED;
}

DatasetFormat FromProto(v1::DatasetFormat f) {
  switch (f) {
    case v1::DATASET_FORMAT_PROMPT_COMPLETION: return DatasetFormat::kPromptCompletion;
    case v1::DATASET_FORMAT_CHAT: return DatasetFormat::kChat;
    case v1::DATASET_FORMAT_TEXT: return DatasetFormat::kText;
    default: return DatasetFormat::kUnspecified;
  }
}

v1::ValidationReport ToProto(const DatasetReport& r) {
  v1::ValidationReport out;
  out.set_format(ToProto(r.format));
  out.set_example_count(r.example_count);
  out.set_token_estimate(r.token_estimate);
  out.set_error_count(r.error_count);
  out.set_warning_count(r.warning_count);
  out.mutable_tokens()->set_min(r.tokens.min);
  out.mutable_tokens()->set_max(r.tokens.max);
  out.mutable_tokens()->set_p50(r.tokens.p50);
  out.mutable_tokens()->set_p95(r.tokens.p95);
  out.mutable_tokens()->set_mean(r.tokens.mean);
  out.set_over_max_seq_len(r.over_max_seq_len);
  out.set_duplicate_count(r.duplicate_count);
  out.set_empty_prompt_count(r.empty_prompt_count);
  out.set_turn_count(r.turn_count);
  out.set_tokenizer(r.tokenizer);
  for (const auto& [code, n] : r.problem_counts) (*out.mutable_problem_counts())[code] = n;
  for (const DatasetProblem& p : r.problems) {
    v1::DatasetProblem* q = out.add_problems();
    q->set_code(p.code);
    q->set_severity(p.severity == Severity::kError ? v1::PROBLEM_SEVERITY_ERROR
                                                   : v1::PROBLEM_SEVERITY_WARNING);
    q->set_record(p.record);
    q->set_line(p.line);
    q->set_column(p.column);
    q->set_field(p.field);
    q->set_message(p.message);
  }
  return out;
}

}  // namespace tuneforge
