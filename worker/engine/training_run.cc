#include "worker/engine/training_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "worker/engine/evaluate.h"
#include "worker/engine/lora.h"
#include "worker/engine/lr_schedule.h"

namespace tuneforge::engine {
namespace {

using Clock = std::chrono::steady_clock;

// Inside a run, failures are exceptions, as libtorch's are: the worker
// catches them once, at the job's boundary. The loaders' Status becomes one
// here, prefixed with what the run was doing.
void OrThrow(const absl::Status& s, const std::string& doing) {
  if (!s.ok()) throw std::runtime_error(doing + std::string(s.message()));
}
template <typename T>
T OrThrow(absl::StatusOr<T> v, const std::string& doing) {
  OrThrow(v.status(), doing);
  return *std::move(v);
}

// The settings a checkpoint must share with the run that resumes it: those
// training_settings.def marks kMustMatch, and what they resolve to (warmup
// steps, sequence length, chat template). A data-parallel run counts as one
// process accumulating every rank's micro-batches: the data positions are
// the same.
std::string Fingerprint(const TrainConfig& c, const TrainPlan& plan, int64_t max_len) {
  char text[256];
  std::snprintf(text, sizeof(text),
                "v2 sequences=%lld/%lld accum=%d warmup=%lld max_len=%lld params=%lld "
                "lora=%d/%.17g/%zu chat=%s ",
                static_cast<long long>(plan.train_sequences),
                static_cast<long long>(plan.validation_examples),
                c.gradient_accumulation_steps * c.world_size,
                static_cast<long long>(plan.warmup_steps), static_cast<long long>(max_len),
                static_cast<long long>(plan.parameter_count), c.lora.rank, c.lora.alpha,
                c.lora.targets.size(), plan.chat_template.c_str());
  return text + MustMatchText(c);
}

// The fingerprint checkpoints written before the settings table carry, so
// that a job checkpointed by an older worker resumes on a newer one.
std::string FingerprintV1(const TrainConfig& c, const TrainPlan& plan, int64_t max_len) {
  const int schedule = c.schedule == "linear" ? 1 : c.schedule == "constant" ? 2 : 0;
  char text[512];
  std::snprintf(text, sizeof(text),
                "sequences=%lld/%lld batch=%d accum=%d epochs=%d seed=%llu lr=%.17g warmup=%d "
                "schedule=%d wd=%.17g max_len=%lld clip=%.17g prompt=%d params=%lld "
                "lora=%d/%.17g/%zu chat=%s pack=%d group=%d",
                static_cast<long long>(plan.train_sequences),
                static_cast<long long>(plan.validation_examples), c.batch_size,
                c.gradient_accumulation_steps * c.world_size, c.epochs,
                static_cast<unsigned long long>(c.seed), c.learning_rate,
                static_cast<int>(plan.warmup_steps), schedule, c.weight_decay,
                static_cast<long long>(max_len), c.grad_clip, c.train_on_prompt ? 1 : 0,
                static_cast<long long>(plan.parameter_count), c.lora.rank, c.lora.alpha,
                c.lora.targets.size(), plan.chat_template.c_str(), c.packing ? 1 : 0,
                c.group_by_length ? 1 : 0);
  return text;
}

// Smooths the step loss (exponential average, 0.9) and throws when it has
// risen `factor` times above its lowest value and at least one nat.
void CheckDivergence(double step_loss, double factor, TrainerState& s) {
  s.smoothed_loss = s.smoothed_steps == 0 ? step_loss : 0.9 * s.smoothed_loss + 0.1 * step_loss;
  ++s.smoothed_steps;
  s.min_smoothed_loss = std::min(s.min_smoothed_loss, s.smoothed_loss);
  if (factor > 0 && s.smoothed_loss > factor * s.min_smoothed_loss &&
      s.smoothed_loss > s.min_smoothed_loss + 1.0) {
    char text[256];
    std::snprintf(text, sizeof(text),
                  "training diverged at step %lld: the smoothed loss %.4g is more than %g times "
                  "its lowest, %.4g; lower the learning rate or warm up longer",
                  static_cast<long long>(s.step + 1), s.smoothed_loss, factor,
                  s.min_smoothed_loss);
    throw std::runtime_error(text);
  }
}

// A hash (FNV-1a) of the sequences' tokens and targets, so data-parallel
// ranks can check they hold the same data.
std::string DataHash(const std::vector<Sequence>& train, const std::vector<Sequence>& validation) {
  uint64_t h = 14695981039346656037ULL;
  auto mix = [&](int64_t v) { h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ULL; };
  for (const std::vector<Sequence>* seqs : {&train, &validation}) {
    mix(static_cast<int64_t>(seqs->size()));
    for (const Sequence& seq : *seqs) {
      for (int64_t id : seq.ids) mix(id);
      for (int64_t t : seq.targets) mix(t);
      mix(-1);
    }
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(h));
  return text;
}

torch::Device ResolveDevice(const std::string& name) {
  const bool cuda = torch::cuda::is_available();
  if (name == "cuda" && !cuda) {
    throw std::invalid_argument("device cuda: libtorch " + LibtorchVersion() +
                                " sees no CUDA device");
  }
  return name == "cuda" || (name == "auto" && cuda) ? torch::kCUDA : torch::kCPU;
}

}  // namespace

int64_t MaxLength(const TrainConfig& config, const ModelConfig& model) {
  const int64_t limit = MaxSequenceLength(model);
  return config.max_seq_len > 0 ? std::min<int64_t>(config.max_seq_len, limit) : limit;
}

ModelFolder OpenBase(const TrainConfig& config) {
  absl::StatusOr<ModelFolder> m = OpenModel(config.model, config.seed);
  if (!m.ok()) throw std::invalid_argument(std::string(m.status().message()));
  return *std::move(m);
}

torch::Device SetUpCompute(const TrainConfig& c, Transformer& model, TrainPlan* plan) {
  const torch::Device device = ResolveDevice(c.device);
  model->to(device);
  ComputeOptions compute;
  const bool bf16 = c.precision == "bf16" || (c.precision == "auto" && device.is_cuda());
  compute.matmul_dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  compute.recompute_activations = c.recompute_activations;
  compute.fused_kernels = c.fused_kernels;
  model->SetCompute(compute);
  if (plan) {
    plan->device = device.is_cuda() ? "cuda" : "cpu";
    plan->precision = bf16 ? "bf16" : "fp32";
  }
  return device;
}

TrainingRun::TrainingRun(const TrainConfig& config, const std::vector<Example>& validation,
                         TrainObserver& observer)
    : config_(config),
      validation_(validation),
      observer_(observer),
      leader_(config.rank == 0),
      lora_(config.lora.rank > 0) {
  plan_.threads = TrainingThreads(config);
  torch::set_num_threads(plan_.threads);
  torch::manual_seed(config.seed);
}

void TrainingRun::OpenModel() {
  if (config_.resume && leader_ && !config_.checkpoint_dir.empty()) {
    resume_from_ = LatestCheckpoint(config_.checkpoint_dir);
  }
  // A LoRA run's checkpoints hold only the adapter: its base is config.model.
  if (resume_from_.empty() || lora_) {
    base_ = OpenBase(config_);
    if (lora_) EnableLora(base_.model, config_.lora);
  }
  if (!resume_from_.empty()) {
    const std::string what = "cannot resume from " + resume_from_ + ": ";
    state_ = OrThrow(ReadTrainerState(resume_from_), what);
    if (lora_) {
      OrThrow(LoadAdapter(base_.model, resume_from_), what);
    } else {
      base_ = OrThrow(LoadModelFolder(resume_from_), what);
    }
  }
  Transformer& model = base_.model;
  model->train();
  max_len_ = MaxLength(config_, model->config());
  device_ = SetUpCompute(config_, model, &plan_);
  chat_ = ResolveChatTemplate(config_.chat_template, *base_.tokenizer);
  plan_.chat_template = std::string(ChatTemplateName(chat_));
  for (const auto& item : model->named_parameters()) {
    const bool adapter = item.key().find(".lora_") != std::string::npos;
    if (!adapter) plan_.parameter_count += item.value().numel();
    if (item.value().requires_grad()) plan_.trainable_parameters += item.value().numel();
  }
}

void TrainingRun::PrepareData(const std::vector<Example>& train) {
  train_seqs_ = TokenizeAll(base_, train, max_len_, config_.train_on_prompt, chat_,
                            &plan_.truncated_examples);
  val_seqs_ = TokenizeAll(base_, validation_, max_len_, config_.train_on_prompt, chat_,
                          &plan_.truncated_examples);
  plan_.train_examples = static_cast<int64_t>(train.size());
  plan_.validation_examples = static_cast<int64_t>(validation_.size());
  plan_.train_sequences = static_cast<int64_t>(train_seqs_.size());
  if (config_.packing) {  // packed once, in an order from the seed; rows shuffle per epoch
    std::vector<int64_t> order(train_seqs_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    DeterministicShuffle(order, config_.seed);
    train_seqs_ = Pack(train_seqs_, order, max_len_);
    plan_.packed_rows = static_cast<int64_t>(train_seqs_.size());
  }
  const int64_t rows = static_cast<int64_t>(train_seqs_.size());
  row_targets_.resize(rows);
  for (int64_t i = 0; i < rows; ++i) {
    row_targets_[i] = std::count_if(train_seqs_[i].targets.begin(), train_seqs_[i].targets.end(),
                                    [](int64_t t) { return t != kIgnore; });
  }
  const int64_t micro_per_epoch = (rows + config_.batch_size - 1) / config_.batch_size;
  // Micro-batch j of a step is rank j % world_size's.
  micro_per_step_ = int64_t(config_.gradient_accumulation_steps) * config_.world_size;
  plan_.steps_per_epoch = (micro_per_epoch + micro_per_step_ - 1) / micro_per_step_;
  plan_.total_steps = plan_.steps_per_epoch * config_.epochs;
  plan_.warmup_steps =
      config_.warmup_steps > 0
          ? config_.warmup_steps
          : static_cast<int64_t>(std::ceil(config_.warmup_ratio * double(plan_.total_steps)));
  plan_.resumed_from_step = state_.step;
  fingerprint_ = Fingerprint(config_, plan_, max_len_);
  if (!resume_from_.empty() && state_.fingerprint != fingerprint_ &&
      state_.fingerprint != FingerprintV1(config_, plan_, max_len_)) {
    throw std::invalid_argument("checkpoint " + resume_from_ + " was made by a run with other "
                                "settings or data (" + state_.fingerprint + "; now " +
                                fingerprint_ + "); resume with the same ones or start afresh");
  }
  state_.fingerprint = fingerprint_;
}

void TrainingRun::JoinRanks() {
  if (config_.world_size > 1) {
    group_ = std::make_unique<DataParallel>(DataParallelOptions{
        config_.world_size, config_.rank, config_.rendezvous,
        config_.rendezvous_timeout_seconds});
    group_->CheckSame("settings and data",
                      fingerprint_ + " data=" + DataHash(train_seqs_, val_seqs_));
    state_ = OrThrow(ParseTrainerState(group_->Broadcast(TrainerStateJson(state_))),
                     "rank 0's trainer state: ");
    plan_.resumed_from_step = state_.step;
  }
  plan_.resumed_tokens_seen = state_.tokens_seen;
}

void TrainingRun::MakeOptimizer() {
  // AdamW; no weight decay on biases and norms (every 1-D parameter).
  std::vector<AdamW::Param> params;  // the trainable ones: all, or the adapters
  for (const auto& item : base_.model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    params.push_back({item.key(), item.value(), item.value().dim() >= 2});
    trainable_.push_back(item.value());
  }
  AdamW::Options adam;
  adam.weight_decay = config_.weight_decay;
  adam.fused = config_.fused_kernels;
  optimizer_ = std::make_unique<AdamW>(std::move(params), adam);
  if (!resume_from_.empty()) {
    OrThrow(LoadOptimizerState(resume_from_, *optimizer_), "cannot resume: ");
  }
  if (group_) {  // every rank starts from rank 0's weights and moments
    std::map<std::string, torch::Tensor> moments = optimizer_->State();
    std::vector<torch::Tensor> tensors = trainable_;
    for (const auto& [name, t] : moments) tensors.push_back(t);
    group_->Broadcast(tensors);
    optimizer_->LoadState(moments);
  }
  // A checkpoint that ends an epoch resumes at the next one.
  if (state_.epoch_step >= plan_.steps_per_epoch) {
    ++state_.epoch;
    state_.epoch_step = 0;
  }
  last_checkpoint_ = state_.step;
}

TrainResult TrainingRun::TrainEpochs() {
  bool early = false;
  for (; state_.epoch <= config_.epochs && !early; ++state_.epoch, state_.epoch_step = 0) {
    const std::vector<int64_t> order = EpochOrder(train_seqs_, config_, state_.epoch);
    for (; state_.epoch_step < plan_.steps_per_epoch; ++state_.epoch_step) {
      if (StopRequested()) {
        if (config_.checkpoint_on_stop && state_.step > last_checkpoint_) Checkpoint();
        result_.stopped = true;
        result_.steps = state_.step;
        return result_;
      }
      const StepResult step = Step(order);
      const bool epoch_end = state_.epoch_step + 1 == plan_.steps_per_epoch;
      if (state_.step % config_.log_every_steps == 0 || epoch_end) ReportMetrics(step);
      if (epoch_end) {
        state_.epoch_step = plan_.steps_per_epoch;  // the position a checkpoint records
        early = Evaluate();
        Checkpoint();
        break;
      }
      bool save = config_.checkpoint_every_steps > 0 &&
                  state_.step % config_.checkpoint_every_steps == 0;
      if (config_.eval_every_steps > 0 && state_.step % config_.eval_every_steps == 0) {
        early = Evaluate();
        save = save || early || state_.best_step == state_.step;  // keep every new best
      }
      if (save) {
        ++state_.epoch_step;  // this step is done: resume at the next
        Checkpoint();
        --state_.epoch_step;
      }
      if (early) break;
    }
  }
  result_.steps = state_.step;
  result_.final_train_loss = state_.last_loss;
  result_.final_validation_loss = state_.last_eval_loss;
  result_.best_step = state_.best_step;
  result_.best_validation_loss = std::isfinite(state_.best_loss) ? state_.best_loss : 0;
  if (!config_.output_dir.empty() && leader_) SaveOutput();
  return result_;
}

bool TrainingRun::StopRequested() {
  bool stop = observer_.ShouldStop();
  if (group_) {
    stop = group_->Sum({stop ? 1.0 : 0.0})[0] > 0;  // any rank's stop stops them all
    // Dropout draws from a stream of the rank and the step, so a resumed
    // rank continues as it would have.
    torch::manual_seed(config_.seed + 1000003ULL * uint64_t(state_.step + 1) +
                       7919ULL * uint64_t(config_.rank));
  }
  return stop;
}

std::vector<Batch> TrainingRun::StepBatches(const std::vector<int64_t>& order,
                                            StepResult& step) const {
  std::vector<Batch> micro;
  for (int64_t j = 0; j < micro_per_step_; ++j) {
    const size_t begin =
        (state_.epoch_step * micro_per_step_ + j) * static_cast<size_t>(config_.batch_size);
    if (begin >= order.size()) break;
    const size_t end = std::min(order.size(), begin + config_.batch_size);
    for (size_t i = begin; i < end; ++i) {
      step.targets += row_targets_[order[i]];
      step.tokens += static_cast<int64_t>(train_seqs_[order[i]].ids.size());
    }
    if (j % config_.world_size != config_.rank) continue;
    micro.push_back(MakeBatch(train_seqs_, order, begin, end, base_.pad_id, device_));
  }
  return micro;
}

TrainingRun::StepResult TrainingRun::Step(const std::vector<int64_t>& order) {
  const auto started = Clock::now();
  StepResult step;
  step.lr = LearningRateAt(state_.step, plan_.total_steps, plan_.warmup_steps, config_);
  const std::vector<Batch> micro = StepBatches(order, step);
  optimizer_->ZeroGrad();
  for (const Batch& batch : micro) {
    if (batch.target_tokens == 0) continue;
    torch::Tensor loss_sum = ComputeLoss(base_.model, batch, false).loss_sum;  // ()
    (loss_sum / double(step.targets)).backward();
    step.loss_sum += loss_sum.item<double>();
  }
  if (group_ && step.targets > 0) {  // sum every rank's gradients and losses
    std::vector<torch::Tensor> grads;
    for (torch::Tensor& p : trainable_) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
    group_->SumInPlace(grads);
    step.loss_sum = group_->Sum({step.loss_sum})[0];
  }
  if (step.targets > 0) {
    const double step_loss = step.loss_sum / double(step.targets);
    if (!std::isfinite(step_loss)) {
      throw std::runtime_error("training loss became non-finite at step " +
                               std::to_string(state_.step + 1) +
                               "; lower the learning rate or check the data");
    }
    CheckDivergence(step_loss, config_.divergence_factor, state_);
    step.grad_norm = optimizer_->GradNorm();
    // Clipping as torch.nn.utils.clip_grad_norm_ does it, folded into the update.
    const double clip = config_.grad_clip / (step.grad_norm + 1e-6);
    optimizer_->Step(step.lr, config_.grad_clip > 0 && clip < 1 ? clip : 1.0);
  }
  ++state_.step;
  state_.tokens_seen += step.tokens;
  state_.window_loss += step.loss_sum;
  state_.window_targets += step.targets;
  state_.window_tokens += step.tokens;
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  state_.window_seconds += seconds;
  state_.train_seconds += seconds;
  return step;
}

void TrainingRun::ReportMetrics(const StepResult& step) {
  StepMetrics m;
  m.epoch = state_.epoch;
  m.step = state_.step;
  m.total_steps = plan_.total_steps;
  m.loss = state_.window_targets > 0 ? state_.window_loss / double(state_.window_targets) : 0;
  m.learning_rate = step.lr;
  m.grad_norm = step.grad_norm;
  m.tokens_per_second =
      state_.window_seconds > 0 ? state_.window_tokens / state_.window_seconds : 0;
  m.tokens_seen = state_.tokens_seen;
  m.epoch_progress = double(state_.epoch_step + 1) / double(plan_.steps_per_epoch);
  m.eta_seconds = state_.train_seconds / double(state_.step - plan_.resumed_from_step) *
                  double(plan_.total_steps - state_.step);
  observer_.OnMetrics(m);
  state_.last_loss = m.loss;
  state_.window_loss = 0;
  state_.window_targets = 0;
  state_.window_tokens = 0;
  state_.window_seconds = 0;
}

bool TrainingRun::Evaluate() {
  if (val_seqs_.empty()) return false;
  EvalSums sums = EvaluateShard(base_.model, val_seqs_, config_.batch_size, base_.pad_id,
                                device_, config_.rank, config_.world_size);
  if (group_) {
    const std::vector<double> total = group_->Sum({sums.loss, sums.correct, sums.targets});
    sums = {total[0], total[1], total[2]};
  }
  EvalMetrics m = ToMetrics(sums);
  m.epoch = state_.epoch;
  m.step = state_.step;
  state_.last_eval_loss = m.validation_loss;
  observer_.OnEvaluation(m);
  int samples = 0;
  for (const Example& e : validation_) {
    if (samples == config_.sample_count || !leader_) break;
    const std::vector<Segment> prompt = GenerationPrompt(e, chat_);
    if (prompt.empty()) continue;  // text documents have nothing to complete
    observer_.OnSample(JoinText(prompt),
                       Complete(base_, prompt, chat_, config_.sample_max_tokens), state_.step);
    ++samples;
  }
  if (m.validation_loss < state_.best_loss) {
    state_.best_loss = m.validation_loss;
    state_.best_step = state_.step;
  }
  if (m.validation_loss < state_.improved_loss - config_.early_stopping_min_delta) {
    state_.improved_loss = m.validation_loss;
    state_.evals_without_improvement = 0;
  } else {
    ++state_.evals_without_improvement;
  }
  if (config_.early_stopping_patience == 0 ||
      state_.evals_without_improvement < config_.early_stopping_patience) {
    return false;
  }
  char reason[256];
  std::snprintf(reason, sizeof(reason),
                "early stopping: validation loss did not improve by %g in %d evaluations "
                "(best %.4f at step %lld)",
                config_.early_stopping_min_delta, state_.evals_without_improvement,
                state_.best_loss, static_cast<long long>(state_.best_step));
  result_.stop_reason = reason;
  return true;
}

void TrainingRun::Checkpoint() {
  if (config_.checkpoint_dir.empty() || !leader_) return;
  OrThrow(SaveCheckpoint(config_.checkpoint_dir, base_, *optimizer_, state_,
                         lora_ ? &config_.lora : nullptr),
          "cannot save a checkpoint: ");
  last_checkpoint_ = state_.step;
  PruneCheckpoints(config_.checkpoint_dir, config_.keep_checkpoints, state_.best_step);
  observer_.OnCheckpoint(state_.step, state_.epoch,
                         config_.checkpoint_dir + "/" + CheckpointName(state_.step),
                         state_.best_step == state_.step);
}

void TrainingRun::SaveOutput() {
  // After early stopping, the best checkpoint's weights are the result.
  const std::string best = config_.checkpoint_dir + "/" + CheckpointName(state_.best_step);
  if (!result_.stop_reason.empty() && !config_.checkpoint_dir.empty() &&
      std::filesystem::exists(best)) {
    const std::string what = "cannot load the best checkpoint: ";
    if (lora_) {
      OrThrow(LoadAdapter(base_.model, best), what);
    } else {
      base_.model = OrThrow(LoadModelFolder(best), what).model;
    }
  }
  if (lora_) {
    OrThrow(SaveAdapter(base_.model, config_.lora, config_.model, config_.output_dir + "/adapter"),
            "cannot save the adapter: ");
    MergeLora(base_.model);
  }
  OrThrow(SaveModelFolder(base_, config_.output_dir), "cannot save the model: ");
}

}  // namespace tuneforge::engine
