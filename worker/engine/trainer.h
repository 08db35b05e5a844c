// The fine-tuning loop: tokenises examples, batches them, runs AdamW with a
// warmup + decay schedule, evaluates on the validation set after every epoch,
// and reports metrics to an observer as it goes.
//
//   TrainConfig config;            // defaults fit the tiny presets
//   config.epochs = 3;
//   MyObserver observer;           // receives metrics; can ask to stop
//   TrainResult r = Train(config, train_examples, validation_examples, observer);
//
// Examples are rendered by Render() (common/dataset.h), chats with the
// model's chat template, and end with end-of-text or the template's
// end-of-turn token; loss falls on the segments it marks trained. Batches
// pad each sequence to the longest of the batch, and group sequences of
// similar length so little is padding; or, with packing, fill rows of
// max_seq_len with several sequences that do not attend to one another.
//
// This header has no libtorch include, so RPC code can call the engine without
// paying libtorch's compile time. Train() throws std::exception (c10::Error
// included) on failure: the caller turns that into a job failure.
// Not thread-safe: one Train() per thread; observer calls come on that thread.
#ifndef TUNEFORGE_WORKER_ENGINE_TRAINER_H_
#define TUNEFORGE_WORKER_ENGINE_TRAINER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dataset.h"
#include "common/metrics_row.h"
#include "common/training_settings.h"
#include "worker/engine/lora_options.h"

namespace tuneforge::engine {

// A run's settings: the job's training settings (common/training_settings.def:
// epochs, batch_size, learning_rate, schedule, ... with their defaults) and
// what the host decides (model, device, threads, folders, data-parallel ranks).
struct TrainConfig : TrainingSettings {
  std::string model = "tiny-gpt2";  // a preset name or a Hugging Face model folder
  // "auto": CUDA when libtorch sees a GPU, else the CPU; "cpu"; "cuda".
  std::string device = "auto";
  // Fused CPU kernels (ops.h) for float32 on the CPU; off: the same
  // formulas as libtorch operations (for comparison; CUDA always uses those).
  bool fused_kernels = true;
  int threads = 0;                 // intra-op threads; 0: the cores we may use
  int sample_max_tokens = 64;      // length limit of each sample
  std::string output_dir;          // if set: the trained model, as a Hugging Face folder
  // Checkpoints (checkpoint.h): at every epoch end and every
  // checkpoint_every_steps; the newest keep_checkpoints and the best
  // (lowest validation loss) are kept.
  std::string checkpoint_dir;      // "": no checkpoints
  bool resume = false;             // continue from the newest checkpoint, if any
  bool checkpoint_on_stop = false; // ShouldStop() saves one first (pause, eviction)
  // LoRA (rank > 0): only adapters train; the output is the merged model,
  // with the adapter in PEFT's format in output_dir/adapter.
  LoraOptions lora;
  // Data-parallel training (data_parallel.h): world_size processes, of
  // ranks 0..world_size-1, meet at `rendezvous` (host:port; rank 0 listens)
  // and train as one run whose optimizer steps take
  // gradient_accumulation_steps micro-batches on every rank: the same
  // losses as one process with world_size times the accumulation. Every
  // rank needs the same model, data and settings (checked). Rank 0 alone
  // resumes, writes checkpoints and the output; the others take its
  // weights, optimizer and position when they start.
  int world_size = 1;
  int rank = 0;
  std::string rendezvous;
  int rendezvous_timeout_seconds = 300;  // to meet, and for each sum
};

// The rows the engine reports (common/metrics_row.h).
using ::tuneforge::EvalMetrics;
using ::tuneforge::StepMetrics;

struct TrainPlan {
  int64_t parameter_count = 0;
  int64_t trainable_parameters = 0;  // all of them, or the LoRA adapters'
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  int64_t train_sequences = 0;     // long text documents give several
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  int64_t truncated_examples = 0;  // longer than max_seq_len, cut
  int64_t packed_rows = 0;         // packing: the rows the sequences fill
  int64_t warmup_steps = 0;        // from warmup_steps or warmup_ratio
  std::string chat_template;       // the one in use: plain, chatml or llama3
  std::string device;              // cpu or cuda
  std::string precision;           // fp32 or bf16
  int threads = 0;
  int64_t resumed_from_step = 0;   // 0: a fresh start
  int64_t resumed_tokens_seen = 0; // training tokens of the steps before it
};

class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  virtual void OnStart(const TrainPlan& plan) {}
  virtual void OnMetrics(const StepMetrics& m) {}
  virtual void OnEvaluation(const EvalMetrics& m) {}
  virtual void OnSample(const std::string& prompt, const std::string& completion,
                        int64_t step) {}
  // After a checkpoint of `step` is written to `dir`; `best` when it has the
  // lowest validation loss so far.
  virtual void OnCheckpoint(int64_t step, int epoch, const std::string& dir, bool best) {}
  // Polled before every optimizer step; true stops training early.
  virtual bool ShouldStop() { return false; }
};

struct TrainResult {
  bool stopped = false;     // ShouldStop() ended it early
  std::string stop_reason;  // set when early stopping ended it
  int64_t steps = 0;
  double final_train_loss = 0;
  double final_validation_loss = 0;  // 0 without validation examples
  int64_t best_step = 0;             // of the lowest validation loss
  double best_validation_loss = 0;
};

TrainResult Train(const TrainConfig& config, const std::vector<Example>& train,
                  const std::vector<Example>& validation, TrainObserver& observer);

// The loss of config.model on `examples`, as validation computes it: mean
// over the tokens that carry loss (completions, assistant turns, every token
// of a text document), perplexity and token accuracy. Uses model, seed (for
// presets), batch_size, max_seq_len, train_on_prompt and threads.
// Also uses chat_template, device and precision. `*truncated` counts examples
// cut to the sequence length. Throws on failure.
EvalMetrics EvaluateModel(const TrainConfig& config, const std::vector<Example>& examples,
                          int64_t* truncated);

// The engine's version, recorded in job manifests.
inline constexpr const char* kEngineVersion = "0.1.0";
// libtorch's version, e.g. "1.13.1".
std::string LibtorchVersion();

// Cores this process may run on: the CPU affinity mask, capped by a cgroup
// CPU quota (Kubernetes limits) when one is set.
int AvailableCores();

// The intra-op threads a run or an evaluation uses: config.threads, else
// every available core.
int TrainingThreads(const TrainConfig& config);

// "cuda" when libtorch sees a GPU, else "cpu": where device "auto" trains.
std::string DefaultDevice();

// Validates a config: INVALID_ARGUMENT says what is wrong with it.
absl::Status CheckConfig(const TrainConfig& config);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_TRAINER_H_
