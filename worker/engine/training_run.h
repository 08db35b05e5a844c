// One training run, as the named steps Train() (trainer.h) takes in order:
//
//   TrainingRun run(config, validation, observer);
//   run.OpenModel();           // the base model, or the newest checkpoint's
//   run.PrepareData(train);    // tokenise, pack, plan the steps; check a resume
//   run.JoinRanks();           // data-parallel: meet, compare, take rank 0's state
//   run.MakeOptimizer();       // AdamW, with a resumed run's moments
//   return run.TrainEpochs();  // steps, reports, evaluations, checkpoints, output
//
// Each optimizer step: every rank's micro-batches forward and backward, the
// gradients summed over ranks, divergence checked, clipped, AdamW. Every
// log_every_steps a StepMetrics report; at every epoch end (and every
// eval_every_steps) an evaluation with samples, early stopping, and a
// checkpoint. Dimensions: B batch, T time, V vocabulary.
//
// Engine-internal. Not thread-safe: one run per thread. Throws on failure.
#ifndef TUNEFORGE_WORKER_ENGINE_TRAINING_RUN_H_
#define TUNEFORGE_WORKER_ENGINE_TRAINING_RUN_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/engine/adamw.h"
#include "worker/engine/batches.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/data_parallel.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/trainer.h"

namespace tuneforge::engine {

class TrainingRun {
 public:
  TrainingRun(const TrainConfig& config, const std::vector<Example>& validation,
              TrainObserver& observer);

  void OpenModel();
  void PrepareData(const std::vector<Example>& train);
  void JoinRanks();
  void MakeOptimizer();
  TrainResult TrainEpochs();

  const TrainPlan& plan() const { return plan_; }

 private:
  // What one optimizer step did, over every rank.
  struct StepResult {
    double lr = 0;
    double loss_sum = 0;     // over its target tokens
    int64_t targets = 0;     // target tokens
    int64_t tokens = 0;      // input tokens
    double grad_norm = 0;    // before clipping
  };

  // Whether the observer (on any rank) asks to stop before the next step.
  bool StopRequested();
  // The micro-batches of this rank for the current step of `order`.
  std::vector<Batch> StepBatches(const std::vector<int64_t>& order, StepResult& step) const;
  StepResult Step(const std::vector<int64_t>& order);
  void ReportMetrics(const StepResult& step);
  // Evaluates (with samples); true when early stopping ends the run.
  bool Evaluate();
  void Checkpoint();
  // Writes the output folder (the best checkpoint's weights after early
  // stopping; the adapter and the merged model for LoRA).
  void SaveOutput();

  const TrainConfig& config_;
  const std::vector<Example>& validation_;
  TrainObserver& observer_;
  const bool leader_;  // rank 0: resumes, checkpoints and saves
  const bool lora_;
  std::string resume_from_;  // the checkpoint this run continues, if any
  TrainerState state_;
  ModelFolder base_;
  int64_t max_len_ = 0;
  torch::Device device_ = torch::kCPU;
  ChatTemplate chat_ = ChatTemplate::kPlain;
  TrainPlan plan_;
  std::vector<Sequence> train_seqs_;
  std::vector<Sequence> val_seqs_;
  std::vector<int64_t> row_targets_;  // target tokens of each training row
  int64_t micro_per_step_ = 1;        // micro-batches of a step, over every rank
  std::string fingerprint_;
  std::unique_ptr<DataParallel> group_;
  std::vector<torch::Tensor> trainable_;
  std::unique_ptr<AdamW> optimizer_;
  int64_t last_checkpoint_ = 0;
  TrainResult result_;
};

// Shared with EvaluateModel(): the sequence length a run uses, the base
// model it opens, and its device and precision (recorded in `plan` if given).
int64_t MaxLength(const TrainConfig& config, const ModelConfig& model);
ModelFolder OpenBase(const TrainConfig& config);
torch::Device SetUpCompute(const TrainConfig& c, Transformer& model, TrainPlan* plan);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_TRAINING_RUN_H_
