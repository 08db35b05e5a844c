#include "worker/engine/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status_macros.h"

namespace tuneforge::engine {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kStateVersion = 2;  // 2: the divergence guard's smoothed loss
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";

DType ToDType(torch::ScalarType t) {
  switch (t) {
    case torch::kInt64: return DType::kI64;
    case torch::kUInt8: return DType::kU8;
    default: return DType::kF32;
  }
}

torch::ScalarType ToScalar(DType d) {
  switch (d) {
    case DType::kI64: return torch::kInt64;
    case DType::kU8: return torch::kUInt8;
    default: return torch::kFloat32;
  }
}

// Checkpoint folders under root with their steps, oldest first.
std::vector<std::pair<int64_t, std::string>> Checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step-", 0) != 0 || name.size() != 13) continue;
    if (!fs::exists(e.path() / kStateFile)) continue;  // not (yet) a checkpoint
    try {
      out.emplace_back(std::stoll(name.substr(5)), e.path().string());
    } catch (const std::exception&) {
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string CheckpointName(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

std::string TrainerStateJson(const TrainerState& s) {
  const json j = {{"version", kStateVersion},
                  {"step", s.step},
                  {"epoch", s.epoch},
                  {"epoch_step", s.epoch_step},
                  {"tokens_seen", s.tokens_seen},
                  {"train_seconds", s.train_seconds},
                  {"window_loss", s.window_loss},
                  {"window_targets", s.window_targets},
                  {"window_tokens", s.window_tokens},
                  {"window_seconds", s.window_seconds},
                  {"best_loss", std::isfinite(s.best_loss) ? json(s.best_loss) : json(nullptr)},
                  {"best_step", s.best_step},
                  {"improved_loss",
                   std::isfinite(s.improved_loss) ? json(s.improved_loss) : json(nullptr)},
                  {"evals_without_improvement", s.evals_without_improvement},
                  {"smoothed_loss", s.smoothed_loss},
                  {"min_smoothed_loss",
                   std::isfinite(s.min_smoothed_loss) ? json(s.min_smoothed_loss) : json(nullptr)},
                  {"smoothed_steps", s.smoothed_steps},
                  {"last_loss", s.last_loss},
                  {"last_eval_loss", s.last_eval_loss},
                  {"fingerprint", s.fingerprint}};
  return j.dump(2);
}

absl::StatusOr<TrainerState> ParseTrainerState(const std::string& text) {
  TrainerState state;
  TrainerState* s = &state;
  try {
    json j = json::parse(text);
    if (j.value("version", 0) != kStateVersion) {
      return absl::FailedPreconditionError(
          "trainer state version " + std::to_string(j.value("version", 0)) +
          ", this build reads version " + std::to_string(kStateVersion));
    }
    s->step = j.at("step");
    s->epoch = j.at("epoch");
    s->epoch_step = j.at("epoch_step");
    s->tokens_seen = j.at("tokens_seen");
    s->train_seconds = j.at("train_seconds");
    s->window_loss = j.at("window_loss");
    s->window_targets = j.at("window_targets");
    s->window_tokens = j.at("window_tokens");
    s->window_seconds = j.at("window_seconds");
    s->best_loss = j.at("best_loss").is_null() ? std::numeric_limits<double>::infinity()
                                               : j.at("best_loss").get<double>();
    s->best_step = j.at("best_step");
    s->improved_loss = j.at("improved_loss").is_null() ? std::numeric_limits<double>::infinity()
                                                       : j.at("improved_loss").get<double>();
    s->evals_without_improvement = j.at("evals_without_improvement");
    s->smoothed_loss = j.at("smoothed_loss");
    s->min_smoothed_loss = j.at("min_smoothed_loss").is_null()
                               ? std::numeric_limits<double>::infinity()
                               : j.at("min_smoothed_loss").get<double>();
    s->smoothed_steps = j.at("smoothed_steps");
    s->last_loss = j.at("last_loss");
    s->last_eval_loss = j.at("last_eval_loss");
    s->fingerprint = j.at("fingerprint");
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return state;
}

absl::Status SaveCheckpoint(const std::string& root, ModelFolder& model, const AdamW& optimizer,
                           const TrainerState& s, const LoraOptions* lora) {
  const fs::path final_dir = fs::path(root) / CheckpointName(s.step);
  const fs::path tmp = fs::path(root) / (CheckpointName(s.step) + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), "cannot create " + tmp.string());
  RETURN_IF_ERROR(lora ? SaveAdapter(model.model, *lora, "", tmp.string())
                       : SaveModelFolder(model, tmp.string()));

  std::map<std::string, torch::Tensor> tensors = optimizer.State();
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    tensors["rng_state"] = gen.get_state();
  }
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    const torch::Tensor& k = keep.back();
    out.push_back({name, ToDType(k.scalar_type()),
                   std::vector<int64_t>(k.sizes().begin(), k.sizes().end()),
                   std::string_view(static_cast<const char*>(k.data_ptr()), k.nbytes())});
  }
  RETURN_IF_ERROR(WriteSafetensors((tmp / kOptimizerFile).string(), out));

  {
    // The state file goes last: its presence marks a complete checkpoint.
    std::ofstream f(tmp / kStateFile);
    f << TrainerStateJson(s) << "\n";
    if (!f.flush()) {
      return absl::ErrnoToStatus(errno, "cannot write " + (tmp / kStateFile).string());
    }
  }
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), "cannot rename " + tmp.string());
  return absl::OkStatus();
}

std::string LatestCheckpoint(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> all = Checkpoints(root);
  return all.empty() ? "" : all.back().second;
}

absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir) {
  const std::string path = dir + "/" + kStateFile;
  std::string text;
  if (!ReadWholeFile(path, &text)) return absl::ErrnoToStatus(errno, "cannot read " + path);
  absl::StatusOr<TrainerState> state = ParseTrainerState(text);
  if (!state.ok()) {
    return absl::Status(state.status().code(), path + ": " + std::string(state.status().message()));
  }
  return state;
}

absl::Status LoadOptimizerState(const std::string& dir, AdamW& optimizer) {
  ASSIGN_OR_RETURN(const std::unique_ptr<SafetensorsFile> file,
                   SafetensorsFile::Open(dir + "/" + kOptimizerFile));
  std::map<std::string, torch::Tensor> state;
  for (const TensorInfo& t : file->header().tensors) {
    std::string_view bytes = file->Data(t);
    state[t.name] = torch::from_blob(const_cast<char*>(bytes.data()), t.shape,
                                     torch::TensorOptions().dtype(ToScalar(t.dtype)))
                        .clone();
  }
  try {
    optimizer.LoadState(state);
    auto rng = state.find("rng_state");
    if (rng == state.end()) {
      return absl::InvalidArgumentError(dir + ": the optimizer state has no rng_state");
    }
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng->second);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(dir + ": " + e.what());
  }
  return absl::OkStatus();
}

void PruneCheckpoints(const std::string& root, int keep_last, int64_t best_step) {
  std::vector<std::pair<int64_t, std::string>> all = Checkpoints(root);
  const int64_t drop = static_cast<int64_t>(all.size()) - std::max(keep_last, 1);
  for (int64_t i = 0; i < drop; ++i) {
    if (all[i].first == best_step) continue;
    std::error_code ec;
    fs::remove_all(all[i].second, ec);
  }
}

}  // namespace tuneforge::engine
