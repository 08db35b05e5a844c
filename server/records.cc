#include "server/records.h"

#include <nlohmann/json.hpp>

namespace tuneforge {

NLOHMANN_JSON_SERIALIZE_ENUM(JobState, {{JobState::kUnspecified, "UNSPECIFIED"},
                                        {JobState::kQueued, "QUEUED"},
                                        {JobState::kRunning, "RUNNING"},
                                        {JobState::kSucceeded, "SUCCEEDED"},
                                        {JobState::kFailed, "FAILED"},
                                        {JobState::kCancelled, "CANCELLED"},
                                        {JobState::kPaused, "PAUSED"}})
NLOHMANN_JSON_SERIALIZE_ENUM(Severity, {{Severity::kError, "error"},
                                        {Severity::kWarning, "warning"}})
NLOHMANN_JSON_SERIALIZE_ENUM(DatasetFormat,
                             {{DatasetFormat::kUnspecified, "unspecified"},
                              {DatasetFormat::kPromptCompletion, "prompt_completion"},
                              {DatasetFormat::kChat, "chat"},
                              {DatasetFormat::kText, "text"}})

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DatasetProblem, code, severity, record, line,
                                                column, field, message)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TokenStats, min, max, p50, p95, mean)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DatasetReport, format, tokenizer, example_count,
                                                token_estimate, tokens, over_max_seq_len,
                                                duplicate_count, empty_prompt_count, turn_count,
                                                error_count, warning_count, problem_counts,
                                                problems)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(LoraSpec, rank, alpha, dropout, targets)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(JobSpec, base_model, training_dataset,
                                                validation_dataset, validation_split,
                                                hyperparameters, lora, suffix, priority, labels,
                                                request_id)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(JobProgress, epoch, total_epochs, step,
                                                total_steps, tokens_seen, train_loss,
                                                validation_loss, has_validation_loss,
                                                tokens_per_second, eta_seconds)
NLOHMANN_JSON_SERIALIZE_ENUM(ModelSource, {{ModelSource::kPreset, "preset"},
                                           {ModelSource::kImported, "imported"},
                                           {ModelSource::kJob, "job"}})
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(FileRecord, path, sha256, size_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ModelRecord, id, tenant, display_name, source, model_type,
                                                architecture, parameter_count, context_length,
                                                vocab_size, dtype, tokenizer, size_bytes, files,
                                                source_job, base_model, create_time_ms)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Job, id, tenant, spec, state, create_time_ms, submit_seq,
                                                start_time_ms, end_time_ms, progress, attempt,
                                                max_attempts, error, worker, lease,
                                                cancel_requested, train_examples,
                                                validation_examples, last_sequence, last_report_sequence,
                                                artifacts,
                                                result_model, checkpoint_name, checkpoint_step,
                                                checkpoint, pending_checkpoint_name,
                                                pending_checkpoint, failures, attempt_errors,
                                                pause_requested, memory_estimate_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(StateChangeEvent, from, to, reason)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(MetricsEvent, epoch, step, total_steps, loss,
                                                learning_rate, grad_norm, tokens_per_second,
                                                tokens_seen, epoch_progress, eta_seconds)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(EvaluationEvent, epoch, step,
                                                validation_loss, perplexity, token_accuracy)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SampleEvent, prompt, completion, step)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(LogEvent, level, message)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CheckpointEvent, name, step, epoch, best, uploaded)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(StartedEvent, train_examples, validation_examples,
                                                total_steps, parameter_count, truncated_examples,
                                                threads, trainable_parameters, device, precision,
                                                chat_template, packed_rows, resumed_from_step)

namespace {

using json = nlohmann::json;
constexpr int kFormatVersion = 1;

json Versioned(json j) {
  j["v"] = kFormatVersion;
  return j;
}

json ParseVersioned(std::string_view text, std::string_view what) {
  json j = json::parse(text);
  int v = j.value("v", 0);
  if (v != kFormatVersion) {
    throw json::other_error::create(
        501, std::string(what) + " record has format version " + std::to_string(v) +
                 ", this build reads version " + std::to_string(kFormatVersion),
        nullptr);
  }
  return j;
}

// A record as text. Strings that are not valid UTF-8 (none should reach a
// record: messages escape what they quote) are written with U+FFFD instead
// of throwing, so no byte a client sent can make a commit fail.
std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Payload kinds in the order of Event::payload's alternatives.
constexpr const char* kPayloadKinds[] = {"state_change", "metrics", "evaluation", "sample",
                                         "log",          "started", "checkpoint"};

template <size_t I = 0>
void PayloadFromKind(const std::string& kind, const json& data, Event* event) {
  if constexpr (I < std::variant_size_v<decltype(Event::payload)>) {
    if (kind == kPayloadKinds[I]) {
      event->payload = data.get<std::variant_alternative_t<I, decltype(Event::payload)>>();
      return;
    }
    PayloadFromKind<I + 1>(kind, data, event);
  } else {
    throw json::other_error::create(502, "unknown event kind '" + kind + "'", nullptr);
  }
}

}  // namespace

bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

std::string_view JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued: return "QUEUED";
    case JobState::kRunning: return "RUNNING";
    case JobState::kSucceeded: return "SUCCEEDED";
    case JobState::kFailed: return "FAILED";
    case JobState::kCancelled: return "CANCELLED";
    case JobState::kPaused: return "PAUSED";
    case JobState::kUnspecified: break;
  }
  return "UNSPECIFIED";
}

std::string ToJson(const DatasetReport& r) { return Dump(Versioned(json(r))); }

DatasetReport DatasetReportFromJson(std::string_view text) {
  return ParseVersioned(text, "dataset report").get<DatasetReport>();
}

std::string ToJson(const Job& job) { return Dump(Versioned(json(job))); }

Job JobFromJson(std::string_view text) { return ParseVersioned(text, "job").get<Job>(); }

std::vector<std::string> SpecDifferences(const JobSpec& a, const JobSpec& b) {
  std::vector<std::string> fields;
  for (const json& op : json::diff(json(a), json(b))) {
    std::string path = op.value("path", "");  // "/hyperparameters/epochs"
    if (!path.empty()) path.erase(0, 1);
    for (char& c : path) c = c == '/' ? '.' : c;
    if (fields.empty() || fields.back() != path) fields.push_back(path);
  }
  return fields;
}

std::string ToJson(const ModelRecord& model) { return Dump(Versioned(json(model))); }

ModelRecord ModelFromJson(std::string_view text) {
  return ParseVersioned(text, "model").get<ModelRecord>();
}

std::string PayloadToJson(const Event& event) {
  json j;
  j["kind"] = kPayloadKinds[event.payload.index()];
  std::visit([&](const auto& p) { j["data"] = p; }, event.payload);
  return Dump(Versioned(std::move(j)));
}

void PayloadFromJson(std::string_view text, Event* event) {
  json j = ParseVersioned(text, "event");
  PayloadFromKind(j.at("kind").get<std::string>(), j.at("data"), event);
}

std::vector<std::string> Digests(const std::vector<FileRecord>& files) {
  std::vector<std::string> out;
  for (const FileRecord& f : files) out.push_back(f.sha256);
  return out;
}

}  // namespace tuneforge
