#include "worker/engine/hf_model.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status_macros.h"

namespace tuneforge::engine {
namespace {

torch::Dtype TorchDtype(DType d) {
  switch (d) {
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    default: return torch::kFloat32;
  }
}

std::vector<int64_t> Sizes(const torch::Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

absl::Status SaveHfModel(Transformer& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), "cannot create " + dir);
  {
    std::ofstream out(dir + "/config.json");
    out << HfConfigJson(model->config());
    if (!out.flush()) return absl::ErrnoToStatus(errno, "cannot write " + dir + "/config.json");
  }
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> keep;  // contiguous float32 CPU copies, alive while writing
  std::vector<TensorToWrite> tensors;
  for (const auto& item : model->named_parameters()) {
    if (item.key().find(".lora_") != std::string::npos) continue;  // adapters: lora.h
    bool transposed = false;
    const std::string name = model->HfName(item.key(), &transposed);
    torch::Tensor t = item.value().detach().to(torch::kCPU, torch::kFloat32);
    if (transposed) t = t.t();
    keep.push_back(t.contiguous());
    const torch::Tensor& k = keep.back();
    tensors.push_back({name, DType::kF32, Sizes(k),
                       std::string_view(static_cast<const char*>(k.data_ptr()),
                                        static_cast<size_t>(k.numel()) * sizeof(float))});
  }
  return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

absl::StatusOr<ModelConfig> ReadHfConfig(const std::string& dir) {
  std::string text;
  if (!ReadWholeFile(dir + "/config.json", &text)) {
    return absl::ErrnoToStatus(errno, dir + "/config.json: cannot read it");
  }
  return ParseHfConfig(text);
}

absl::StatusOr<Transformer> LoadHfModel(const std::string& dir) {
  ASSIGN_OR_RETURN(const ModelConfig config, ReadHfConfig(dir));

  // Shards: the index maps names to files; else one model.safetensors.
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::string> weight_map;
  std::set<std::string> shard_names = {"model.safetensors"};
  if (std::filesystem::exists(dir + "/model.safetensors.index.json")) {
    ASSIGN_OR_RETURN(weight_map, ReadSafetensorsIndex(dir + "/model.safetensors.index.json"));
    shard_names.clear();
    for (const auto& [name, file] : weight_map) shard_names.insert(file);
  }
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> found;
  for (const std::string& shard : shard_names) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                     SafetensorsFile::Open(dir + "/" + shard));
    files.push_back(std::move(file));
    for (const TensorInfo& t : files.back()->header().tensors) {
      found[CanonicalTensorName(t.name, config)] = {files.back().get(), &t};
    }
  }

  Transformer model(config);  // its random initial weights are all overwritten below
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    bool transposed = false;
    const std::string name = model->HfName(item.key(), &transposed);
    auto it = found.find(name);
    if (it == found.end()) {
      return absl::InvalidArgumentError("missing tensor " + name);
    }
    const auto [file, info] = it->second;
    if (info->dtype != DType::kF32 && info->dtype != DType::kF16 && info->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(name + ": dtype " + std::string(DTypeName(info->dtype)) +
                                        " is not F32, F16 or BF16");
    }
    std::vector<int64_t> expected = Sizes(item.value());
    if (transposed) std::swap(expected[0], expected[1]);
    if (info->shape != expected) {
      return absl::InvalidArgumentError(name + ": shape " + ShapeText(info->shape) +
                                        ", expected " + ShapeText(expected));
    }
    std::string_view bytes = file->Data(*info);
    torch::Tensor t = torch::from_blob(const_cast<char*>(bytes.data()), info->shape,
                                       torch::TensorOptions().dtype(TorchDtype(info->dtype)));
    if (transposed) t = t.t();
    item.value().copy_(t);  // converts to float32, copies out of the mapping
    used.insert(name);
  }
  for (const auto& [name, unused] : found) {
    if (used.count(name) == 0 && !IsIgnorableTensor(name, config)) {
      return absl::InvalidArgumentError("unexpected tensor " + name);
    }
  }
  return model;
}

}  // namespace tuneforge::engine
