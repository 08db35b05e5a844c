#include "client/format.h"

#include <algorithm>
#include <cctype>
#include <map>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace tuneforge::cli {

std::string StateName(v1::JobState s) {
  std::string name = v1::JobState_Name(s);
  const std::string prefix = "JOB_STATE_";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

std::string Duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string EventLine(const v1::JobEvent& e) {
  std::string prefix = absl::StrFormat("#%-4d ", e.sequence());
  switch (e.payload_case()) {
    case v1::JobEvent::kStateChange: {
      const v1::StateChange& c = e.state_change();
      std::string line = c.from() == v1::JOB_STATE_UNSPECIFIED
                             ? absl::StrCat("state ", StateName(c.to()))
                             : absl::StrCat("state ", StateName(c.from()), " -> ",
                                            StateName(c.to()));
      if (!c.reason().empty()) absl::StrAppend(&line, " (", c.reason(), ")");
      return prefix + line;
    }
    case v1::JobEvent::kMetrics: {
      const v1::TrainingMetrics& m = e.metrics();
      return prefix + absl::StrFormat(
                          "epoch %d step %d/%d  train_loss %.4f  lr %.2e  grad_norm %.3f  "
                          "tokens/s %.0f  eta %s",
                          m.epoch(), m.step(), m.total_steps(), m.loss(), m.learning_rate(),
                          m.grad_norm(), m.tokens_per_second(), Duration(m.eta_seconds()));
    }
    case v1::JobEvent::kEvaluation: {
      const v1::Evaluation& v = e.evaluation();
      return prefix + absl::StrFormat(
                          "epoch %d step %d  validation_loss %.4f  perplexity %.2f  "
                          "token_accuracy %.3f",
                          v.epoch(), v.step(), v.validation_loss(), v.perplexity(),
                          v.token_accuracy());
    }
    case v1::JobEvent::kSample:  // newlines shown as \n: one line per event
      return prefix + absl::StrCat("sample: ", absl::StrReplaceAll(e.sample().prompt(), {{"\n", "\\n"}}),
                                   " -> ", absl::StrReplaceAll(e.sample().completion(), {{"\n", "\\n"}}));
    case v1::JobEvent::kLog:
      return prefix + absl::StrCat(e.log().level(), ": ", e.log().message());
    case v1::JobEvent::kStarted: {
      const v1::TrainingStarted& t = e.started();
      std::string line = absl::StrCat("training ", t.parameter_count(), " parameters on ",
                                      t.train_examples(), " examples (", t.validation_examples(),
                                      " for validation), ", t.total_steps(), " steps, ",
                                      t.threads(), " threads");
      if (!t.device().empty()) {
        absl::StrAppend(&line, ", ", t.device(), " ", t.precision());
      }
      if (t.trainable_parameters() > 0 && t.trainable_parameters() < t.parameter_count()) {
        absl::StrAppend(&line, ", ", t.trainable_parameters(), " trained");
      }
      if (!t.chat_template().empty() && t.chat_template() != "plain") {
        absl::StrAppend(&line, ", chat template ", t.chat_template());
      }
      if (t.packed_rows() > 0) absl::StrAppend(&line, ", packed into ", t.packed_rows(), " rows");
      if (t.truncated_examples() > 0) {
        absl::StrAppend(&line, "; ", t.truncated_examples(), " examples truncated to max_seq_len");
      }
      return prefix + line;
    }
    case v1::JobEvent::kCheckpoint:
      return prefix + absl::StrCat("checkpoint at step ", e.checkpoint().step(),
                                   e.checkpoint().best() ? " (best so far)" : "",
                                   e.checkpoint().uploaded() ? "" : " (on its worker only)");
    case v1::JobEvent::PAYLOAD_NOT_SET:
      break;
  }
  return prefix + "(unknown event)";
}

std::string JobSummary(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  std::string out = absl::StrCat(job.name(), "  ", StateName(job.state()), "\n");
  std::string method;
  if (job.method() == v1::TRAINING_METHOD_LORA) {
    method = absl::StrCat(" (LoRA rank ", job.lora().rank(), ")");
  }
  absl::StrAppend(&out, "  model ", job.base_model(), method, "  dataset ", job.training_dataset(),
                  "  examples ", job.train_examples(), " train / ", job.validation_examples(),
                  " validation\n");
  // Hand-backs and pauses start attempts that do not count against max_attempts.
  const std::string attempt =
      job.attempt() == job.failed_attempts() + 1 || job.attempt() == 0
          ? absl::StrFormat("attempt %d/%d", job.attempt(), job.max_attempts())
          : absl::StrFormat("attempt %d (%d/%d failed)", job.attempt(), job.failed_attempts(),
                            job.max_attempts());
  absl::StrAppend(&out, absl::StrFormat("  epoch %d/%d  step %d/%d  tokens %d  %s\n", p.epoch(),
                                        p.total_epochs(), p.step(), p.total_steps(),
                                        p.tokens_seen(), attempt));
  if (!job.wait_reason().empty()) absl::StrAppend(&out, "  waiting: ", job.wait_reason(), "\n");
  if (!job.checkpoint().empty()) {
    absl::StrAppend(&out, "  checkpoint ", job.checkpoint(), " (resumes from step ",
                    job.checkpoint_step(), ")\n");
  }
  if (p.step() > 0) {
    absl::StrAppend(&out, absl::StrFormat("  train_loss %.4f", p.train_loss()));
    if (p.has_validation_loss()) {
      absl::StrAppend(&out, absl::StrFormat("  validation_loss %.4f", p.validation_loss()));
    }
    absl::StrAppend(&out, absl::StrFormat("  tokens/s %.0f", p.tokens_per_second()));
    if (job.state() == v1::JOB_STATE_RUNNING) {
      absl::StrAppend(&out, "  eta ", Duration(p.eta_seconds()));
    }
    absl::StrAppend(&out, "\n");
  }
  if (!job.error().empty()) absl::StrAppend(&out, "  error: ", job.error(), "\n");
  if (job.error().empty()) {  // a failed job's error lists them all already
    for (const std::string& e : job.attempt_errors()) absl::StrAppend(&out, "  failed ", e, "\n");
  }
  if (!job.result_model().empty()) {
    absl::StrAppend(&out, "  result ", job.result_model(), " (fine-tune it further with --model ",
                    job.name(), ")\n");
  }
  return out;
}

std::string ModelSummary(const v1::Model& m) {
  std::string type = m.model_type() == m.architecture()
                         ? m.architecture()
                         : absl::StrCat(m.model_type(), ", ", m.architecture(), " layout");
  std::string out = absl::StrFormat("%s  %s  %.2fM parameters  context %d  vocab %d  %s\n",
                                    m.name(), type, double(m.parameter_count()) / 1e6,
                                    m.context_length(), m.vocab_size(), m.dtype());
  absl::StrAppend(&out, "  ", m.display_name(), "\n  tokenizer: ", m.tokenizer(), "\n");
  if (!m.files().empty()) {
    absl::StrAppend(&out, absl::StrFormat("  %d files, %.1f MB\n", m.files_size(),
                                          double(m.size_bytes()) / 1e6));
  }
  if (!m.source_job().empty()) {
    absl::StrAppend(&out, "  trained by ", m.source_job(), " from ", m.base_model(), "\n");
  }
  return out;
}

std::string ReportSummary(const v1::ValidationReport& r) {
  std::string format = v1::DatasetFormat_Name(r.format()).substr(std::string("DATASET_FORMAT_").size());
  for (char& c : format) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string out = absl::StrCat("  ", format, ": ", r.example_count(), " examples, ",
                                 r.token_estimate(), " tokens (", r.tokenizer(), " tokenizer)");
  if (r.turn_count() > 0) absl::StrAppend(&out, ", ", r.turn_count(), " chat turns");
  absl::StrAppend(&out, "; ", r.error_count(), " errors, ", r.warning_count(), " warnings\n");
  if (r.example_count() > 0) {
    const v1::TokenStats& t = r.tokens();
    absl::StrAppend(&out, absl::StrFormat("  tokens per example: min %d, mean %.1f, p50 %d, p95 %d, max %d\n",
                                          t.min(), t.mean(), t.p50(), t.p95(), t.max()));
  }
  if (r.over_max_seq_len() > 0) {
    absl::StrAppend(&out, "  ", r.over_max_seq_len(),
                    " examples are longer than the max_seq_len given (they will be truncated)\n");
  }
  if (r.duplicate_count() > 0) absl::StrAppend(&out, "  ", r.duplicate_count(), " exact duplicates\n");
  if (r.empty_prompt_count() > 0) {
    absl::StrAppend(&out, "  ", r.empty_prompt_count(), " empty prompts\n");
  }
  if (!r.problem_counts().empty()) {
    std::map<std::string, int64_t> sorted(r.problem_counts().begin(), r.problem_counts().end());
    absl::StrAppend(&out, "  problems by code:");
    for (const auto& [code, n] : sorted) absl::StrAppend(&out, " ", code, "=", n);
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string DatasetSummary(const v1::Dataset& d) {
  std::string state = v1::DatasetState_Name(d.state());
  state = state.substr(std::string("DATASET_STATE_").size());
  return absl::StrCat(d.name(), "  ", state, "  ", d.display_name(), "  ", d.size_bytes(),
                      " bytes  sha256 ", d.sha256().substr(0, 12), "\n", ReportSummary(d.report()));
}

std::string ReportProblems(const v1::ValidationReport& r) {
  std::string out;
  for (const v1::DatasetProblem& p : r.problems()) {
    absl::StrAppend(&out, "  ",
                    p.severity() == v1::PROBLEM_SEVERITY_WARNING ? "warning" : "error", ": line ",
                    p.line(), ", column ", p.column());
    if (p.record() > 0) absl::StrAppend(&out, ", record ", p.record());
    if (!p.field().empty()) absl::StrAppend(&out, ", field ", p.field());
    absl::StrAppend(&out, ": ", p.message(), " [", p.code(), "]\n");
  }
  const int64_t unlisted = r.error_count() + r.warning_count() - r.problems_size();
  if (unlisted > 0) absl::StrAppend(&out, "  ... and ", unlisted, " more\n");
  return out;
}

namespace {

// Columns of a UTF-8 string, counting each code point as one.
size_t Columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Cut to `width` columns, on a code point boundary.
std::string Fit(const std::string& s, int width) {
  if (static_cast<int>(Columns(s)) <= width) return s;
  size_t cols = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (static_cast<int>(cols) == width - 1) break;
      ++cols;
    }
  }
  return s.substr(0, i) + "…";
}

}  // namespace

std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows, int width) {
  std::vector<size_t> widths(header.size());
  for (size_t i = 0; i < header.size(); ++i) widths[i] = Columns(header[i]);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], Columns(row[i]));
    }
  }
  if (width > 0) {
    auto total = [&] {
      size_t t = 0;
      for (size_t w : widths) t += w + 2;
      return t - 2;
    };
    while (total() > static_cast<size_t>(width)) {
      auto widest = std::max_element(widths.begin(), widths.end());
      if (*widest <= 6) break;  // no narrower than this; the terminal wraps
      --*widest;
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string cell = Fit(i < cells.size() ? cells[i] : "", static_cast<int>(widths[i]));
      absl::StrAppend(&out, cell);
      if (i + 1 < widths.size()) out += std::string(widths[i] - Columns(cell) + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::vector<std::string> JobRow(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  const std::string created = google::protobuf::util::TimeUtil::ToString(job.create_time());
  return {job.name(),
          StateName(job.state()),
          job.base_model(),
          absl::StrCat(p.step(), "/", p.total_steps()),
          p.train_loss() > 0 ? absl::StrFormat("%.4f", p.train_loss()) : "-",
          p.has_validation_loss() ? absl::StrFormat("%.4f", p.validation_loss()) : "-",
          created.substr(0, 19)};
}

std::vector<std::string> DatasetRow(const v1::Dataset& d) {
  std::string state = v1::DatasetState_Name(d.state());
  return {d.name(), state.substr(std::string("DATASET_STATE_").size()),
          absl::StrCat(d.report().example_count()), absl::StrCat(d.size_bytes()), d.display_name()};
}

std::vector<std::string> ModelRow(const v1::Model& m) {
  std::string source = v1::ModelSource_Name(m.source());
  source = source.substr(source.rfind('_') + 1);
  return {m.name(), m.model_type(), absl::StrFormat("%.2fM", double(m.parameter_count()) / 1e6),
          absl::StrCat(m.context_length()), source, m.display_name()};
}

void LiveState::Apply(const v1::JobEvent& e) {
  last_sequence = e.sequence();
  if (e.has_state_change()) {
    state = StateName(e.state_change().to());
    last_line = EventLine(e);
  } else if (e.has_metrics()) {
    metrics = e.metrics();
    has_metrics = true;
    losses.push_back(e.metrics().loss());
  } else if (e.has_evaluation()) {
    validation_loss = e.evaluation().validation_loss();
    has_validation = true;
  } else if (e.has_sample()) {
    sample = e.sample().prompt() + " -> " + e.sample().completion();
  } else {
    last_line = EventLine(e);
  }
}

namespace {

std::string Bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * width + 0.5);
  std::string out = "[";
  for (int i = 0; i < width; ++i) out += i < filled ? "█" : "░";
  return out + "]";
}

std::string Sparkline(const std::vector<double>& values, int width) {
  static const char* const kBlocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  const size_t n = std::min(values.size(), static_cast<size_t>(std::max(width, 1)));
  if (n == 0) return "";
  const auto first = values.end() - static_cast<std::ptrdiff_t>(n);
  const auto [lo, hi] = std::minmax_element(first, values.end());
  std::string out;
  for (auto it = first; it != values.end(); ++it) {
    const double t = *hi > *lo ? (*it - *lo) / (*hi - *lo) : 0.5;
    out += kBlocks[std::clamp(static_cast<int>(t * 7 + 0.5), 0, 7)];
  }
  return out;
}

}  // namespace

std::vector<std::string> LiveFrame(const LiveState& s, int width) {
  const int bar = std::clamp(width - 40, 10, 40);
  std::vector<std::string> lines;
  lines.push_back(absl::StrCat(s.job, "  ", s.state, "  (event #", s.last_sequence, ")"));
  if (s.has_metrics) {
    const v1::TrainingMetrics& m = s.metrics;
    lines.push_back(absl::StrFormat("epoch %d  %s %3.0f%%", m.epoch(), Bar(m.epoch_progress(), bar),
                                    100 * m.epoch_progress()));
    const double done = m.total_steps() > 0 ? double(m.step()) / double(m.total_steps()) : 0;
    lines.push_back(absl::StrFormat("step  %d/%d  %s %3.0f%%  ETA %s", m.step(), m.total_steps(),
                                    Bar(done, bar), 100 * done, Duration(m.eta_seconds())));
    lines.push_back(absl::StrFormat(
        "tokens/s %.0f  train loss %.4f  validation loss %s", m.tokens_per_second(), m.loss(),
        s.has_validation ? absl::StrFormat("%.4f", s.validation_loss) : std::string("-")));
    lines.push_back("loss " + Sparkline(s.losses, width - 6));
  } else {
    lines.push_back("waiting for the first training report");
  }
  if (!s.sample.empty()) lines.push_back("sample: " + s.sample);
  if (!s.last_line.empty()) lines.push_back(s.last_line);
  for (std::string& line : lines) {
    absl::StrReplaceAll({{"\n", " "}, {"\r", " "}, {"\x1b", " "}}, &line);
    line = Fit(line, width);
  }
  return lines;
}

namespace {

// A key as a plain YAML scalar when it is one, else quoted.
std::string YamlKey(const std::string& key) {
  const bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
  return plain ? key : nlohmann::json(key).dump();
}

void AppendYaml(const nlohmann::json& v, int indent, std::string* out) {
  const std::string pad(indent, ' ');
  if (v.is_object()) {
    for (const auto& [key, value] : v.items()) {
      absl::StrAppend(out, pad, YamlKey(key), ":");
      if ((value.is_object() || value.is_array()) && !value.empty()) {
        absl::StrAppend(out, "\n");
        AppendYaml(value, indent + 2, out);
      } else {
        absl::StrAppend(out, " ", value.dump(), "\n");  // scalars, {} and [] as JSON: valid YAML
      }
    }
  } else if (v.is_array()) {
    for (const nlohmann::json& item : v) {
      if ((item.is_object() || item.is_array()) && !item.empty()) {
        // The item's first line goes after the dash, the rest under it.
        std::string nested;
        AppendYaml(item, indent + 2, &nested);
        absl::StrAppend(out, pad, "- ", nested.substr(indent + 2));
      } else {
        absl::StrAppend(out, pad, "- ", item.dump(), "\n");
      }
    }
  } else {
    absl::StrAppend(out, pad, v.dump(), "\n");
  }
}

}  // namespace

std::string ToYaml(const google::protobuf::Message& m) {
  const nlohmann::json doc = nlohmann::json::parse(ToJson(m));
  if (doc.empty()) return "{}\n";
  std::string out;
  AppendYaml(doc, 0, &out);
  return out;
}

std::string Structured(const google::protobuf::Message& m, const std::string& format) {
  return format == "yaml" ? ToYaml(m) : ToJson(m) + "\n";
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = false;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

}  // namespace tuneforge::cli
