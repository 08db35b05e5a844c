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

std::string CheckConfig(const TrainConfig& c) {
  if (c.model.empty()) return "model is empty: name a preset or a model folder";
  if (std::string problem = CheckSettings(c); !problem.empty()) return problem;
  if (c.resume && c.checkpoint_dir.empty()) return "resume needs a checkpoint_dir";
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda") {
    return "device must be auto, cpu or cuda";
  }
  if (c.world_size < 1 || c.world_size > 4096) return "world_size must be in [1, 4096]";
  if (c.rank < 0 || c.rank >= c.world_size) return "rank must be in [0, world_size)";
  if (c.world_size > 1 && c.rendezvous.empty()) {
    return "a world_size above 1 needs a rendezvous (host:port of rank 0)";
  }
  if (c.rendezvous_timeout_seconds < 1) return "rendezvous_timeout_seconds must be >= 1";
  return "";
}

TrainResult Train(const TrainConfig& config, const std::vector<Example>& train,
                  const std::vector<Example>& validation, TrainObserver& observer) {
  if (std::string problem = CheckConfig(config); !problem.empty()) {
    throw std::invalid_argument(problem);
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
  if (std::string problem = CheckConfig(config); !problem.empty()) {
    throw std::invalid_argument(problem);
  }
  torch::set_num_threads(config.threads > 0 ? config.threads : AvailableCores());
  ModelFolder m = OpenBase(config);
  const torch::Device device = SetUpCompute(config, m.model, nullptr);
  const ChatTemplate chat = ResolveChatTemplate(config.chat_template, *m.tokenizer);
  *truncated = 0;
  std::vector<Sequence> seqs = TokenizeAll(m, examples, MaxLength(config, m.model->config()),
                                           config.train_on_prompt, chat, truncated);
  return ToMetrics(EvaluateShard(m.model, seqs, config.batch_size, m.pad_id, device, 0, 1));
}

}  // namespace tuneforge::engine
