#include "worker/engine/trainer.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <torch/torch.h>
#include <torch/version.h>

#include "common/status_macros.h"
#include "worker/engine/batches.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/keep_freed_memory.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/training_run.h"

namespace tuneforge::engine {
std::string LibtorchVersion() { return TORCH_VERSION; }

std::string DefaultDevice() { return torch::cuda::is_available() ? "cuda" : "cpu"; }

int AvailableCores() {
  int cores = 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = std::max(1, CPU_COUNT(&set));
  std::ifstream cpu_max("/sys/fs/cgroup/cpu.max");  // cgroup v2: "quota period"
  std::string quota;
  double period = 0;
  if (cpu_max >> quota >> period && quota != "max" && period > 0) {
    int limit = static_cast<int>(std::ceil(std::stod(quota) / period));
    cores = std::clamp(limit, 1, cores);
  }
  return cores;
}

int TrainingThreads(const TrainConfig& config) {
  return config.threads > 0 ? config.threads : AvailableCores();
}

absl::Status CheckConfig(const TrainConfig& c) {
  auto invalid = [](const char* what) { return absl::InvalidArgumentError(what); };
  if (c.model.empty()) return invalid("model is empty: name a preset or a model folder");
  RETURN_IF_ERROR(CheckSettings(c));
  if (c.resume && c.checkpoint_dir.empty()) return invalid("resume needs a checkpoint_dir");
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda") {
    return invalid("device must be auto, cpu or cuda");
  }
  if (c.world_size < 1 || c.world_size > 4096) return invalid("world_size must be in [1, 4096]");
  if (c.rank < 0 || c.rank >= c.world_size) return invalid("rank must be in [0, world_size)");
  if (c.world_size > 1 && c.rendezvous.empty()) {
    return invalid("a world_size above 1 needs a rendezvous (host:port of rank 0)");
  }
  if (c.rendezvous_timeout_seconds < 1) return invalid("rendezvous_timeout_seconds must be >= 1");
  return absl::OkStatus();
}

TrainResult Train(const TrainConfig& config, const std::vector<Example>& train,
                  const std::vector<Example>& validation, TrainObserver& observer) {
  if (absl::Status problem = CheckConfig(config); !problem.ok()) {
    throw std::invalid_argument(std::string(problem.message()));
  }
  if (train.empty()) throw std::invalid_argument("the training set is empty");
  KeepFreedMemory keep_freed_memory;
  TrainingRun run(config, validation, observer);
  run.OpenModel();
  run.PrepareData(train);
  run.JoinRanks();
  observer.OnStart(run.plan());
  run.MakeOptimizer();
  return run.TrainEpochs();
}

EvalMetrics EvaluateModel(const TrainConfig& config, const std::vector<Example>& examples,
                          int64_t* truncated) {
  if (absl::Status problem = CheckConfig(config); !problem.ok()) {
    throw std::invalid_argument(std::string(problem.message()));
  }
  torch::set_num_threads(TrainingThreads(config));
  ModelFolder m = OpenBase(config);
  const torch::Device device = SetUpCompute(config, m.model, nullptr);
  const ChatTemplate chat = ResolveChatTemplate(config.chat_template, *m.tokenizer);
  *truncated = 0;
  std::vector<Sequence> seqs = TokenizeAll(m, examples, MaxLength(config, m.model->config()),
                                           config.train_on_prompt, chat, truncated);
  return ToMetrics(EvaluateShard(m.model, seqs, config.batch_size, m.pad_id, device, 0, 1));
}

}  // namespace tuneforge::engine
