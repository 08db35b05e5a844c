#include "worker/engine/hf_model.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/file_util.h"
#include "common/safetensors.h"

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

std::string SaveHfModel(Transformer& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "cannot create " + dir + ": " + ec.message();
  {
    std::ofstream out(dir + "/config.json");
    out << HfConfigJson(model->config());
    if (!out.flush()) return "cannot write " + dir + "/config.json";
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

std::optional<ModelConfig> ReadHfConfig(const std::string& dir, std::string* error) {
  std::string text;
  if (!ReadWholeFile(dir + "/config.json", &text)) {
    *error = dir + "/config.json: cannot read it";
    return std::nullopt;
  }
  return ParseHfConfig(text, error);
}

std::optional<Transformer> LoadHfModel(const std::string& dir, std::string* error) {
  std::optional<ModelConfig> config = ReadHfConfig(dir, error);
  if (!config) return std::nullopt;

  // Shards: the index maps names to files; else one model.safetensors.
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::string> weight_map;
  std::set<std::string> shard_names = {"model.safetensors"};
  if (std::filesystem::exists(dir + "/model.safetensors.index.json")) {
    *error = ReadSafetensorsIndex(dir + "/model.safetensors.index.json", &weight_map);
    if (!error->empty()) return std::nullopt;
    shard_names.clear();
    for (const auto& [name, file] : weight_map) shard_names.insert(file);
  }
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> found;
  for (const std::string& shard : shard_names) {
    files.push_back(SafetensorsFile::Open(dir + "/" + shard, error));
    if (!files.back()) return std::nullopt;
    for (const TensorInfo& t : files.back()->header().tensors) {
      found[CanonicalTensorName(t.name, *config)] = {files.back().get(), &t};
    }
  }

  Transformer model(*config);  // its random initial weights are all overwritten below
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    bool transposed = false;
    const std::string name = model->HfName(item.key(), &transposed);
    auto it = found.find(name);
    if (it == found.end()) {
      *error = "missing tensor " + name;
      return std::nullopt;
    }
    const auto [file, info] = it->second;
    if (info->dtype != DType::kF32 && info->dtype != DType::kF16 && info->dtype != DType::kBF16) {
      *error = name + ": dtype " + std::string(DTypeName(info->dtype)) + " is not F32, F16 or BF16";
      return std::nullopt;
    }
    std::vector<int64_t> expected = Sizes(item.value());
    if (transposed) std::swap(expected[0], expected[1]);
    if (info->shape != expected) {
      *error = name + ": shape " + ShapeText(info->shape) + ", expected " + ShapeText(expected);
      return std::nullopt;
    }
    std::string_view bytes = file->Data(*info);
    torch::Tensor t = torch::from_blob(const_cast<char*>(bytes.data()), info->shape,
                                       torch::TensorOptions().dtype(TorchDtype(info->dtype)));
    if (transposed) t = t.t();
    item.value().copy_(t);  // converts to float32, copies out of the mapping
    used.insert(name);
  }
  for (const auto& [name, unused] : found) {
    if (used.count(name) == 0 && !IsIgnorableTensor(name, *config)) {
      *error = "unexpected tensor " + name;
      return std::nullopt;
    }
  }
  return model;
}

}  // namespace tuneforge::engine
