#include "server/convert.h"

#include <algorithm>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/metrics_proto.h"
#include "common/settings_proto.h"
#include "common/status_macros.h"

namespace tuneforge {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Ts(int64_t ms) { return TimeUtil::MillisecondsToTimestamp(ms); }

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 63) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> IdFromName(const std::string& name, const std::string& collection,
                                       const std::string& field) {
  const std::string prefix = collection + "/";
  std::string id = absl::StartsWith(name, prefix) ? name.substr(prefix.size()) : name;
  if (!ValidId(id)) {
    // Quoted back only in part: a name may be megabytes of anything.
    const std::string shown = name.size() > 80 ? name.substr(0, 80) + "..." : name;
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", absl::CHexEscape(shown),
                                                   "' is not a valid ", collection,
                                                   " name; expected '", collection,
                                                   "/{id}' with id of [a-z0-9-]"));
  }
  return id;
}

absl::Status CheckText(const std::string& text, const char* field, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": at most ", max_bytes, " bytes"));
  }
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": control characters (tabs, newlines, escapes) are not allowed"));
    }
  }
  return absl::OkStatus();
}

v1::Dataset ToProto(const DatasetRecord& d) {
  v1::Dataset out;
  out.set_name(absl::StrCat("datasets/", d.id));
  out.set_display_name(d.display_name);
  out.set_state(d.state == DatasetState::kReady ? v1::DATASET_STATE_READY
                                                : v1::DATASET_STATE_INVALID);
  out.set_size_bytes(d.size_bytes);
  out.set_sha256(d.sha256);
  *out.mutable_create_time() = Ts(d.create_time_ms);
  *out.mutable_report() = ToProto(d.report);
  out.set_separator(d.separator);
  return out;
}

v1::Model ToProto(const ModelRecord& m) {
  v1::Model out;
  out.set_name(absl::StrCat("models/", m.id));
  out.set_display_name(m.display_name);
  out.set_source(static_cast<v1::ModelSource>(static_cast<int>(m.source)));
  out.set_architecture(m.architecture);
  out.set_parameter_count(m.parameter_count);
  out.set_context_length(static_cast<int32_t>(m.context_length));
  out.set_vocab_size(static_cast<int32_t>(m.vocab_size));
  out.set_tokenizer(m.tokenizer);
  if (m.create_time_ms > 0) *out.mutable_create_time() = Ts(m.create_time_ms);
  out.set_model_type(m.model_type);
  out.set_dtype(m.dtype);
  out.set_size_bytes(m.size_bytes);
  for (const FileRecord& f : m.files) {
    v1::ModelFile* file = out.add_files();
    file->set_path(f.path);
    file->set_size_bytes(f.size_bytes);
    file->set_sha256(f.sha256);
  }
  if (!m.source_job.empty()) out.set_source_job(absl::StrCat("jobs/", m.source_job));
  if (!m.base_model.empty()) out.set_base_model(absl::StrCat("models/", m.base_model));
  return out;
}

v1::JobState ToProto(JobState s) { return static_cast<v1::JobState>(static_cast<int>(s)); }
JobState FromProto(v1::JobState s) { return static_cast<JobState>(static_cast<int>(s)); }

absl::StatusOr<JobSpec> JobSpecFromProto(const v1::Job& job) {
  JobSpec spec;
  // "models/{id}", a bare id, or "jobs/{id}" (that job's model).
  if (absl::StartsWith(job.base_model(), "jobs/")) {
    auto source = IdFromName(job.base_model(), "jobs", "job.base_model");
    if (!source.ok()) return source.status();
    spec.base_model = absl::StrCat("jobs/", *source);
  } else {
    auto model = IdFromName(job.base_model(), "models", "job.base_model");
    if (!model.ok()) return model.status();
    spec.base_model = *model;
  }
  auto train = IdFromName(job.training_dataset(), "datasets", "job.training_dataset");
  if (!train.ok()) return train.status();
  spec.training_dataset = *train;
  if (!job.validation_dataset().empty()) {
    auto val = IdFromName(job.validation_dataset(), "datasets", "job.validation_dataset");
    if (!val.ok()) return val.status();
    spec.validation_dataset = *val;
    if (job.has_validation_split()) {
      return absl::InvalidArgumentError(
          "job.validation_split: set either a validation dataset or a split, not both");
    }
    spec.validation_split = 0;
  } else if (job.has_validation_split()) {
    if (!(job.validation_split() >= 0 && job.validation_split() < 1)) {
      return absl::InvalidArgumentError("job.validation_split: must be in [0, 1)");
    }
    spec.validation_split = job.validation_split();
  }
  if (job.method() == v1::TRAINING_METHOD_LORA) {
    const v1::LoraConfig& l = job.lora();
    spec.lora.rank = l.rank() == 0 ? 8 : l.rank();
    if (spec.lora.rank < 1 || spec.lora.rank > 4096) {
      return absl::InvalidArgumentError("job.lora.rank: must be in [1, 4096] (default 8)");
    }
    if (l.alpha() != 0) spec.lora.alpha = l.alpha();
    if (!(spec.lora.alpha > 0)) return absl::InvalidArgumentError("job.lora.alpha: must be > 0");
    spec.lora.dropout = l.dropout();
    if (!(spec.lora.dropout >= 0 && spec.lora.dropout < 1)) {
      return absl::InvalidArgumentError("job.lora.dropout: must be in [0, 1)");
    }
    if (l.target_modules_size() > 64) {
      return absl::InvalidArgumentError("job.lora.target_modules: at most 64");
    }
    for (const std::string& t : l.target_modules()) {
      const bool ok = !t.empty() && t.size() <= 64 &&
                      std::all_of(t.begin(), t.end(), [](char c) {
                        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                               c == '.';
                      });
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "job.lora.target_modules: '", t, "' is not a module name like q_proj or mlp.c_proj"));
      }
      spec.lora.targets.push_back(t);
    }
  } else if (job.has_lora()) {
    return absl::InvalidArgumentError("job.lora: set only with method LORA");
  }

  absl::StatusOr<TrainingSettings> settings = SettingsFromProto(job.hyperparameters());
  if (!settings.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job.hyperparameters.", settings.status().message()));
  }
  if (absl::Status problem = CheckSettings(*settings); !problem.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("job.hyperparameters.", problem.message()));
  }
  spec.hyperparameters = *std::move(settings);

  RETURN_IF_ERROR(CheckText(job.suffix(), "job.suffix", 64));
  spec.suffix = job.suffix();
  spec.priority = job.priority();
  if (job.labels_size() > 64) return absl::InvalidArgumentError("job.labels: at most 64 labels");
  for (const auto& [k, v] : job.labels()) {
    const bool value_ok = v.size() <= 63 && std::all_of(v.begin(), v.end(), [](char c) {
      return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.';
    });
    if (!ValidId(k) || !value_ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job.labels: key '", absl::CHexEscape(k.substr(0, 80)), "' must be 1-63 characters of "
          "[a-z0-9-], its value at most 63 of [A-Za-z0-9._-]"));
    }
    spec.labels[k] = v;
  }
  if (job.request_id().size() > 128) {
    return absl::InvalidArgumentError("job.request_id: at most 128 bytes");
  }
  spec.request_id = job.request_id();
  return spec;
}

v1::Job ToProto(const Job& job) {
  v1::Job out;
  out.set_name(absl::StrCat("jobs/", job.id));
  out.set_base_model(absl::StrCat("models/", job.spec.base_model));
  out.set_training_dataset(absl::StrCat("datasets/", job.spec.training_dataset));
  if (!job.spec.validation_dataset.empty()) {
    out.set_validation_dataset(absl::StrCat("datasets/", job.spec.validation_dataset));
  } else {
    out.set_validation_split(job.spec.validation_split);
  }
  SettingsToProto(job.spec.hyperparameters, out.mutable_hyperparameters());
  if (job.spec.lora.rank > 0) {
    out.set_method(v1::TRAINING_METHOD_LORA);
    v1::LoraConfig* l = out.mutable_lora();
    l->set_rank(job.spec.lora.rank);
    l->set_alpha(job.spec.lora.alpha);
    l->set_dropout(job.spec.lora.dropout);
    for (const std::string& t : job.spec.lora.targets) l->add_target_modules(t);
  } else {
    out.set_method(v1::TRAINING_METHOD_FULL);
  }
  out.set_suffix(job.spec.suffix);
  out.set_priority(job.spec.priority);
  for (const auto& [k, v] : job.spec.labels) (*out.mutable_labels())[k] = v;
  out.set_request_id(job.spec.request_id);

  out.set_state(ToProto(job.state));
  *out.mutable_create_time() = Ts(job.create_time_ms);
  if (job.start_time_ms) *out.mutable_start_time() = Ts(job.start_time_ms);
  if (job.end_time_ms) *out.mutable_end_time() = Ts(job.end_time_ms);
  v1::JobProgress* g = out.mutable_progress();
  g->set_epoch(job.progress.epoch);
  g->set_total_epochs(job.progress.total_epochs);
  g->set_step(job.progress.step);
  g->set_total_steps(job.progress.total_steps);
  g->set_tokens_seen(job.progress.tokens_seen);
  g->set_train_loss(job.progress.train_loss);
  g->set_validation_loss(job.progress.validation_loss);
  g->set_has_validation_loss(job.progress.has_validation_loss);
  g->set_tokens_per_second(job.progress.tokens_per_second);
  g->set_eta_seconds(job.progress.eta_seconds);
  out.set_attempt(job.attempt);
  out.set_max_attempts(job.max_attempts);
  out.set_error(job.error);
  if (!job.worker.empty()) out.set_worker(absl::StrCat("workers/", job.worker));
  out.set_train_examples(job.train_examples);
  out.set_validation_examples(job.validation_examples);
  if (!job.result_model.empty()) out.set_result_model(absl::StrCat("models/", job.result_model));
  for (const FileRecord& f : job.artifacts) {
    v1::Artifact* a = out.add_artifacts();
    a->set_path(f.path);
    a->set_size_bytes(f.size_bytes);
    a->set_sha256(f.sha256);
  }
  if (!job.checkpoint_name.empty()) {
    out.set_checkpoint(absl::StrCat("jobs/", job.id, "/checkpoints/", job.checkpoint_name));
    out.set_checkpoint_step(job.checkpoint_step);
  }
  out.set_wait_reason(job.wait_reason);
  out.set_queue_position(job.queue_position);
  out.set_failed_attempts(job.failures);
  for (const std::string& e : job.attempt_errors) out.add_attempt_errors(e);
  return out;
}

v1::JobEvent ToProto(const Event& e) {
  v1::JobEvent out;
  out.set_job(absl::StrCat("jobs/", e.job_id));
  out.set_sequence(e.sequence);
  *out.mutable_time() = Ts(e.time_ms);
  if (const auto* s = std::get_if<StateChangeEvent>(&e.payload)) {
    v1::StateChange* p = out.mutable_state_change();
    p->set_from(ToProto(s->from));
    p->set_to(ToProto(s->to));
    p->set_reason(s->reason);
  } else if (const auto* m = std::get_if<MetricsEvent>(&e.payload)) {
    ToProto(*m, out.mutable_metrics());
  } else if (const auto* v = std::get_if<EvaluationEvent>(&e.payload)) {
    ToProto(*v, out.mutable_evaluation());
  } else if (const auto* s = std::get_if<SampleEvent>(&e.payload)) {
    v1::SampleCompletion* p = out.mutable_sample();
    p->set_prompt(s->prompt);
    p->set_completion(s->completion);
    p->set_step(s->step);
  } else if (const auto* l = std::get_if<LogEvent>(&e.payload)) {
    out.mutable_log()->set_level(l->level);
    out.mutable_log()->set_message(l->message);
  } else if (const auto* t = std::get_if<StartedEvent>(&e.payload)) {
    v1::TrainingStarted* p = out.mutable_started();
    p->set_train_examples(t->train_examples);
    p->set_validation_examples(t->validation_examples);
    p->set_total_steps(t->total_steps);
    p->set_parameter_count(t->parameter_count);
    p->set_truncated_examples(t->truncated_examples);
    p->set_threads(t->threads);
    p->set_trainable_parameters(t->trainable_parameters);
    p->set_device(t->device);
    p->set_precision(t->precision);
    p->set_chat_template(t->chat_template);
    p->set_packed_rows(t->packed_rows);
    p->set_resumed_from_step(t->resumed_from_step);
  } else if (const auto* c = std::get_if<CheckpointEvent>(&e.payload)) {
    v1::Checkpoint* p = out.mutable_checkpoint();
    p->set_name(absl::StrCat("jobs/", e.job_id, "/checkpoints/", c->name));
    p->set_step(c->step);
    p->set_epoch(c->epoch);
    p->set_best(c->best);
    p->set_uploaded(c->uploaded);
  }
  return out;
}

absl::StatusOr<Event> EventFromProto(const v1::JobEvent& e) {
  Event out;
  switch (e.payload_case()) {
    case v1::JobEvent::kMetrics:
      out.payload = FromProto(e.metrics());
      break;
    case v1::JobEvent::kEvaluation:
      out.payload = FromProto(e.evaluation());
      break;
    case v1::JobEvent::kSample:
      out.payload = SampleEvent{e.sample().prompt(), e.sample().completion(), e.sample().step()};
      break;
    case v1::JobEvent::kLog:
      out.payload = LogEvent{e.log().level(), e.log().message()};
      break;
    case v1::JobEvent::kStarted: {
      const v1::TrainingStarted& t = e.started();
      out.payload = StartedEvent{t.train_examples(),       t.validation_examples(),
                                 t.total_steps(),          t.parameter_count(),
                                 t.truncated_examples(),   t.threads(),
                                 t.trainable_parameters(), t.device().substr(0, 16),
                                 t.precision().substr(0, 16), t.chat_template().substr(0, 16),
                                 t.packed_rows(),          t.resumed_from_step()};
      break;
    }
    case v1::JobEvent::kCheckpoint: {
      const v1::Checkpoint& c = e.checkpoint();
      const std::string name = c.name().substr(c.name().rfind('/') + 1);
      if (name.empty() || name.size() > 64) {
        return absl::InvalidArgumentError("event.checkpoint.name: 1-64 characters after the last /");
      }
      if (name.rfind("step-", 0) != 0 || name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError("event.checkpoint.name: must end in step-NNNNNNNN");
      }
      out.payload = CheckpointEvent{name, c.step(), c.epoch(), c.best(), c.uploaded()};
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "event.payload: workers report started, metrics, evaluation, sample, checkpoint or "
          "log events");
  }
  return out;
}

}  // namespace tuneforge
