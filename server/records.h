// The scheduler's own types: datasets, jobs and events as the core sees them,
// independent of the wire format (server/convert.h maps them to and from
// tuneforge.v1 protos) and of storage (each serialises to versioned JSON for
// the SQLite store, readable with the sqlite3 shell).
//
// Plain value types; not synchronised.
#ifndef TUNEFORGE_SERVER_RECORDS_H_
#define TUNEFORGE_SERVER_RECORDS_H_

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/dataset.h"
#include "common/dataset_validator.h"
#include "common/metrics_row.h"
#include "common/training_settings.h"

namespace tuneforge {

// Values match tuneforge.v1.JobState.
enum class JobState { kUnspecified = 0, kQueued = 1, kRunning = 2, kSucceeded = 3, kFailed = 4,
                      kCancelled = 5, kPaused = 6 };
bool IsTerminal(JobState s);
std::string_view JobStateName(JobState s);  // "QUEUED", ...

enum class DatasetState { kReady = 1, kInvalid = 2 };

// The tenant that owns what a caller creates when the server runs without a
// tokens file, and of everything stored before tenants existed.
inline constexpr char kDefaultTenant[] = "default";

struct DatasetRecord {
  std::string id;            // e.g. "d7k2m9x0qp4a"
  std::string tenant = kDefaultTenant;
  std::string display_name;  // e.g. "hr.json"
  DatasetState state = DatasetState::kReady;
  int64_t size_bytes = 0;
  std::string sha256;
  int64_t create_time_ms = 0;
  DatasetReport report;
  std::string separator;     // plain text: the document separator
};

// Values match tuneforge.v1.ModelSource.
enum class ModelSource { kPreset = 1, kImported = 2, kJob = 3 };

// One file of a model folder or of a job's output, stored by digest.
struct FileRecord {
  std::string path;  // e.g. "model.safetensors" (models), "model/config.json" (artifacts)
  std::string sha256;
  int64_t size_bytes = 0;
};

// The digests of `files`, in order.
std::vector<std::string> Digests(const std::vector<FileRecord>& files);

struct ModelRecord {
  std::string id;            // "tiny-llama" (preset), "m…" (imported), "ft-{job}" (a job's)
  std::string tenant = kDefaultTenant;  // presets belong to every tenant
  std::string display_name;
  ModelSource source = ModelSource::kImported;
  std::string model_type;    // gpt2, llama, mistral, qwen2
  std::string architecture;  // gpt2 | llama
  int64_t parameter_count = 0;
  int64_t context_length = 0;
  int64_t vocab_size = 0;
  std::string dtype;         // F32, BF16, F16
  std::string tokenizer;     // e.g. "byte-level BPE, 50257 tokens, 50000 merges"
  int64_t size_bytes = 0;
  std::vector<FileRecord> files;  // empty for presets
  std::string source_job;    // kJob: the job that trained it
  std::string base_model;    // kJob: the model it started from
  int64_t create_time_ms = 0;
};


// LoRA settings of a job (rank 0: full fine-tuning).
struct LoraSpec {
  int rank = 0;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets;  // empty: the family's default
};

struct JobSpec {
  std::string base_model;          // model id, e.g. "tiny-gpt2"
  std::string training_dataset;    // dataset id
  std::string validation_dataset;  // dataset id, or empty to split
  double validation_split = 0.1;   // used when validation_dataset is empty
  TrainingSettings hyperparameters;  // common/training_settings.def
  LoraSpec lora;                   // rank > 0: the method is LoRA
  std::string suffix;
  int priority = 0;
  std::map<std::string, std::string> labels;
  std::string request_id;
};

struct JobProgress {
  int epoch = 0;
  int total_epochs = 0;
  int64_t step = 0;
  int64_t total_steps = 0;
  int64_t tokens_seen = 0;
  double train_loss = 0;
  double validation_loss = 0;
  bool has_validation_loss = false;
  double tokens_per_second = 0;
  double eta_seconds = 0;
};

struct Job {
  std::string id;
  std::string tenant = kDefaultTenant;  // whose job it is; set at creation
  JobSpec spec;
  JobState state = JobState::kQueued;
  int64_t create_time_ms = 0;
  int64_t submit_seq = 0;  // order of submission, for jobs created in the same millisecond
  int64_t start_time_ms = 0;
  int64_t end_time_ms = 0;
  JobProgress progress;
  int attempt = 0;        // attempts started so far
  int max_attempts = 3;
  std::string error;
  std::string worker;     // worker id while running
  std::string lease;      // fencing token of the current attempt
  bool cancel_requested = false;
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  int64_t last_sequence = 0;  // sequence of the job's latest event
  // The current attempt's worker numbers its events 1, 2, ...: the number of
  // the last one committed. A resent event (after the stream to the
  // scheduler broke) at or below it is a duplicate and is dropped.
  int64_t last_report_sequence = 0;
  std::vector<FileRecord> artifacts;  // uploaded by the current attempt's worker
  std::string result_model;   // once SUCCEEDED with a model: its id, "ft-{job}"
  // The newest checkpoint uploaded whole (files of the folder, e.g.
  // "model.safetensors"), which the next attempt resumes from on any host;
  // and one still arriving. Both are dropped when the job ends.
  std::string checkpoint_name;  // e.g. "step-00000120"
  int64_t checkpoint_step = 0;
  std::vector<FileRecord> checkpoint;
  std::string pending_checkpoint_name;
  std::vector<FileRecord> pending_checkpoint;
  // Attempts that failed (lease expired, stalled); hand-backs and pauses do
  // not count. At max_attempts the job fails, listing every attempt's reason.
  int failures = 0;
  std::vector<std::string> attempt_errors;
  bool pause_requested = false;  // RUNNING: the worker checkpoints and hands it back PAUSED
  // What a worker must hold at least: weights, gradients and AdamW moments
  // in float32 (16 bytes a parameter; LoRA: the frozen weights, 4); the
  // activations come on top. Jobs go only to workers with that much memory.
  int64_t memory_estimate_bytes = 0;
  // Computed when read, never stored: why a QUEUED or PAUSED job waits.
  std::string wait_reason;
  int queue_position = 0;  // 1-based while QUEUED
};

struct StateChangeEvent {
  JobState from = JobState::kQueued;
  JobState to = JobState::kQueued;
  std::string reason;
};

// A training report and an evaluation: the engine's rows (common/metrics_row.h).
using MetricsEvent = StepMetrics;
using EvaluationEvent = EvalMetrics;

struct SampleEvent {
  std::string prompt;
  std::string completion;
  int64_t step = 0;
};

struct LogEvent {
  std::string level;  // "info", "warning", "error"
  std::string message;
};

struct StartedEvent {
  int64_t train_examples = 0;  // after the split
  int64_t validation_examples = 0;
  int64_t total_steps = 0;
  int64_t parameter_count = 0;
  int64_t truncated_examples = 0;
  int threads = 0;
  int64_t trainable_parameters = 0;
  std::string device;         // cpu | cuda
  std::string precision;      // fp32 | bf16
  std::string chat_template;  // plain | chatml | llama3
  int64_t packed_rows = 0;
  int64_t resumed_from_step = 0;
};

struct CheckpointEvent {
  std::string name;  // e.g. "step-00000120"
  int64_t step = 0;
  int epoch = 0;
  bool best = false;
  bool uploaded = false;  // its files reached the scheduler: any host can resume from it
};

struct Event {
  std::string job_id;
  int64_t sequence = 0;  // 1-based, per job, without gaps
  int64_t time_ms = 0;
  std::variant<StateChangeEvent, MetricsEvent, EvaluationEvent, SampleEvent, LogEvent,
               StartedEvent, CheckpointEvent>
      payload;
};

// JSON forms for the store. Each document carries "v" (its format version);
// a document of an unknown version throws nlohmann::json::exception.
std::string ToJson(const DatasetReport& r);
DatasetReport DatasetReportFromJson(std::string_view text);
std::string ToJson(const Job& job);
// The fields in which two specs differ, by their JSON paths
// ("hyperparameters.epochs"), in order; empty when they are equal.
std::vector<std::string> SpecDifferences(const JobSpec& a, const JobSpec& b);
Job JobFromJson(std::string_view text);
std::string ToJson(const ModelRecord& model);
ModelRecord ModelFromJson(std::string_view text);
std::string PayloadToJson(const Event& event);
void PayloadFromJson(std::string_view text, Event* event);

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_RECORDS_H_
