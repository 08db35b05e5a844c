#include "worker/engine/lora.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "common/status_macros.h"
#include "worker/engine/family.h"

namespace tuneforge::engine {
namespace {

constexpr const char* kPeftPrefix = "base_model.model.";

bool Matches(const std::string& name, const std::string& target) {
  return name == target ||
         (name.size() > target.size() &&
          name.compare(name.size() - target.size(), target.size(), target) == 0 &&
          name[name.size() - target.size() - 1] == '.');
}

std::vector<int64_t> Sizes(const torch::Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
}

}  // namespace

std::vector<std::string> DefaultLoraTargets(const ModelConfig& c) {
  return FamilyOf(c).default_lora_targets;
}

std::vector<std::string> EnableLora(Transformer& model, const LoraOptions& o) {
  if (o.rank < 1 || o.rank > 4096) throw std::invalid_argument("lora rank must be in [1, 4096]");
  if (!(o.alpha > 0)) throw std::invalid_argument("lora alpha must be > 0");
  if (o.dropout < 0 || o.dropout >= 1) throw std::invalid_argument("lora dropout must be in [0, 1)");
  const std::vector<std::string> targets =
      o.targets.empty() ? DefaultLoraTargets(model->config()) : o.targets;
  for (auto& p : model->parameters()) p.requires_grad_(false);
  std::vector<std::string> adapted;
  std::set<std::string> used;
  for (const auto& item : model->named_modules()) {
    auto* projection = item.value()->as<ProjectionImpl>();
    if (projection == nullptr || item.key() == "lm_head") continue;
    for (const std::string& t : targets) {
      if (!Matches(item.key(), t)) continue;
      projection->AddLora(o.rank, o.alpha, o.dropout);
      adapted.push_back(item.key());
      used.insert(t);
      break;
    }
  }
  for (const std::string& t : targets) {
    if (used.count(t) == 0) {
      throw std::invalid_argument("lora target '" + t + "' matches no projection of this " +
                                  std::string(ArchitectureName(model->config().architecture)) +
                                  " model");
    }
  }
  return adapted;
}

absl::Status SaveAdapter(Transformer& model, const LoraOptions& o, const std::string& base_model,
                         const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), "cannot create " + dir);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> tensors;
  for (const auto& item : model->named_parameters()) {
    if (item.key().find(".lora_") == std::string::npos) continue;
    bool transposed = false;
    const std::string name = kPeftPrefix + model->HfName(item.key(), &transposed);
    keep.push_back(item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous());
    const torch::Tensor& k = keep.back();
    tensors.push_back({name, DType::kF32, Sizes(k),
                       std::string_view(static_cast<const char*>(k.data_ptr()), k.nbytes())});
  }
  if (tensors.empty()) {
    return absl::FailedPreconditionError("the model has no LoRA adapters to save");
  }
  const ModelConfig& c = model->config();
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", o.rank},
      {"lora_alpha", o.alpha},
      {"lora_dropout", o.dropout},
      {"target_modules", o.targets.empty() ? DefaultLoraTargets(c) : o.targets},
      {"bias", "none"},
      // GPT-2's Conv1D stores (in, out): PEFT transposes the delta to merge it.
      {"fan_in_fan_out", FamilyOf(c).fan_in_fan_out},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"use_rslora", false},
      {"use_dora", false}};
  {
    std::ofstream out(dir + "/adapter_config.json");
    out << config.dump(2) << "\n";
    if (!out.flush()) {
      return absl::ErrnoToStatus(errno, "cannot write " + dir + "/adapter_config.json");
    }
  }
  return WriteSafetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
}

absl::Status LoadAdapter(Transformer& model, const std::string& dir) {
  ASSIGN_OR_RETURN(const std::unique_ptr<SafetensorsFile> file,
                   SafetensorsFile::Open(dir + "/adapter_model.safetensors"));
  torch::NoGradGuard no_grad;
  int loaded = 0;
  for (auto& item : model->named_parameters()) {
    if (item.key().find(".lora_") == std::string::npos) continue;
    bool transposed = false;
    const std::string name = kPeftPrefix + model->HfName(item.key(), &transposed);
    const TensorInfo* t = file->Find(name);
    if (t == nullptr) return absl::InvalidArgumentError(dir + ": the adapter has no " + name);
    if (t->dtype != DType::kF32 || t->shape != Sizes(item.value())) {
      return absl::InvalidArgumentError(dir + ": " + name + " is not F32 of the adapter's shape");
    }
    std::string_view bytes = file->Data(*t);
    item.value().copy_(torch::from_blob(const_cast<char*>(bytes.data()), t->shape, torch::kFloat32));
    ++loaded;
  }
  if (loaded != static_cast<int>(file->header().tensors.size())) {
    return absl::InvalidArgumentError(
        dir + ": the adapter has tensors for projections this model does not adapt");
  }
  return absl::OkStatus();
}

void MergeLora(Transformer& model) {
  for (const auto& item : model->named_modules()) {
    if (auto* projection = item.value()->as<ProjectionImpl>()) projection->MergeLora();
  }
}

}  // namespace tuneforge::engine
