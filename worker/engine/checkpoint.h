// Training checkpoints: everything a run needs to continue exactly where it
// stopped. A checkpoint is a folder `step-NNNNNNNN` under the run's
// checkpoint directory holding
//   - a complete Hugging Face model folder (config.json, model.safetensors,
//     tokenizer files), so a checkpoint can be evaluated or served as it is;
//   - optimizer.safetensors: AdamW's moments and step count, and the CPU
//     random generator's state;
//   - trainer_state.json: the position in the data order (epoch, step within
//     it), counters, the metrics window since the last report, the best
//     validation loss so far, and the settings that must match to resume.
// It is written under a temporary name and renamed into place, so a process
// killed while saving leaves the previous checkpoints intact; a folder
// without trainer_state.json is never a checkpoint.
//
// Not thread-safe.
#ifndef TUNEFORGE_WORKER_ENGINE_CHECKPOINT_H_
#define TUNEFORGE_WORKER_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "worker/engine/adamw.h"
#include "worker/engine/lora.h"
#include "worker/engine/model_folder.h"

namespace tuneforge::engine {

struct TrainerState {
  // Position: `step` optimizer steps done, `epoch_step` of them in `epoch`
  // (1-based); epoch_step == steps per epoch means the epoch is complete.
  int64_t step = 0;
  int epoch = 1;
  int64_t epoch_step = 0;
  int64_t tokens_seen = 0;
  double train_seconds = 0;
  // Metrics accumulated since the last report.
  double window_loss = 0;
  int64_t window_targets = 0;
  int64_t window_tokens = 0;
  double window_seconds = 0;
  // Evaluation: the lowest validation loss and when; for early stopping, the
  // loss of the last improvement by at least min_delta and evaluations since.
  double best_loss = std::numeric_limits<double>::infinity();
  int64_t best_step = 0;
  double improved_loss = std::numeric_limits<double>::infinity();
  int evals_without_improvement = 0;
  // Divergence guard: the training loss smoothed over steps, and its lowest.
  double smoothed_loss = 0;
  double min_smoothed_loss = std::numeric_limits<double>::infinity();
  int64_t smoothed_steps = 0;
  double last_loss = 0;       // the latest reported training loss
  double last_eval_loss = 0;  // the latest validation loss
  // What must not change between a run and its resumption.
  std::string fingerprint;
};

// Saves a checkpoint of `state.step` under `root`. With
// `lora`, the checkpoint holds the adapter (PEFT's files) instead of the
// model: the frozen base is the run's own.
absl::Status SaveCheckpoint(const std::string& root, ModelFolder& model, const AdamW& optimizer,
                            const TrainerState& state, const LoraOptions* lora = nullptr);

// The newest checkpoint under `root`, or "" when there is none.
std::string LatestCheckpoint(const std::string& root);

// Reads a checkpoint's trainer state. A state of another version is
// FAILED_PRECONDITION; a broken one INVALID_ARGUMENT.
absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir);

// The state as trainer_state.json holds it, and back.
std::string TrainerStateJson(const TrainerState& state);
absl::StatusOr<TrainerState> ParseTrainerState(const std::string& json);

// Restores the optimizer's moments and the random generator.
absl::Status LoadOptimizerState(const std::string& dir, AdamW& optimizer);

// Removes every checkpoint but the newest `keep_last` and the one of
// `best_step` (0: none).
void PruneCheckpoints(const std::string& root, int keep_last, int64_t best_step);

// The folder name of step `step`: "step-00000120".
std::string CheckpointName(int64_t step);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_CHECKPOINT_H_
