#include "worker/engine/hf_gpt2.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/safetensors.h"

namespace tuneforge::engine {
namespace {

using json = nlohmann::json;

// Our parameter name -> HF GPT-2 name (without "transformer."), and whether
// the weight is stored transposed (HF Conv1D).
struct NameMap {
  std::string hf;
  bool transposed = false;
};

std::map<std::string, NameMap> HfNames(const GptConfig& c) {
  std::map<std::string, NameMap> names = {{"wte.weight", {"wte.weight"}},
                                          {"wpe.weight", {"wpe.weight"}},
                                          {"ln_f.weight", {"ln_f.weight"}},
                                          {"ln_f.bias", {"ln_f.bias"}}};
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string ours = "blocks." + std::to_string(i) + ".";
    const std::string hf = "h." + std::to_string(i) + ".";
    for (const char* p : {"weight", "bias"}) {
      const std::string s = p;
      names[ours + "ln1." + s] = {hf + "ln_1." + s};
      names[ours + "ln2." + s] = {hf + "ln_2." + s};
      names[ours + "attn.qkv." + s] = {hf + "attn.c_attn." + s, s == "weight"};
      names[ours + "attn.proj." + s] = {hf + "attn.c_proj." + s, s == "weight"};
      names[ours + "mlp.fc." + s] = {hf + "mlp.c_fc." + s, s == "weight"};
      names[ours + "mlp.proj." + s] = {hf + "mlp.c_proj." + s, s == "weight"};
    }
  }
  return names;
}

torch::Dtype TorchDtype(DType d) {
  switch (d) {
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kF64: return torch::kFloat64;
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

std::string SaveHfGpt2(Gpt& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "cannot create " + dir + ": " + ec.message();
  const GptConfig& c = model->config();
  json config = {{"architectures", {"GPT2LMHeadModel"}},
                 {"model_type", "gpt2"},
                 {"vocab_size", c.vocab_size},
                 {"n_positions", c.context_length},
                 {"n_ctx", c.context_length},
                 {"n_embd", c.d_model},
                 {"n_layer", c.n_layer},
                 {"n_head", c.n_head},
                 {"n_inner", nullptr},
                 {"activation_function", "gelu_new"},
                 {"layer_norm_epsilon", 1e-5},
                 {"resid_pdrop", c.dropout},
                 {"embd_pdrop", c.dropout},
                 {"attn_pdrop", c.dropout},
                 {"initializer_range", 0.02},
                 {"tie_word_embeddings", true},
                 {"torch_dtype", "float32"}};
  std::ofstream(dir + "/config.json") << config.dump(2) << "\n";

  torch::NoGradGuard no_grad;
  const std::map<std::string, NameMap> names = HfNames(c);
  std::vector<torch::Tensor> keep;  // contiguous float32 copies, alive while writing
  std::vector<TensorToWrite> tensors;
  for (const auto& item : model->named_parameters()) {
    const NameMap& n = names.at(item.key());
    torch::Tensor t = item.value().detach().to(torch::kFloat32);
    if (n.transposed) t = t.t();
    keep.push_back(t.contiguous().cpu());
    const torch::Tensor& k = keep.back();
    tensors.push_back({"transformer." + n.hf, DType::kF32, Sizes(k),
                       std::string_view(static_cast<const char*>(k.data_ptr()),
                                        static_cast<size_t>(k.numel()) * sizeof(float))});
  }
  return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

std::optional<GptConfig> ReadHfGpt2Config(const std::string& dir, std::string* error) {
  std::string text;
  if (!ReadWholeFile(dir + "/config.json", &text)) {
    *error = dir + "/config.json: cannot read it";
    return std::nullopt;
  }
  try {
    json j = json::parse(text);
    const std::string type = j.value("model_type", "");
    if (type != "gpt2") {
      *error = "config.json: model_type \"" + type + "\" is not supported here (gpt2 is)";
      return std::nullopt;
    }
    GptConfig c;
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    c.context_length = j.value("n_positions", j.value("n_ctx", int64_t{1024}));
    c.d_model = j.at("n_embd").get<int64_t>();
    c.n_layer = j.at("n_layer").get<int64_t>();
    c.n_head = j.at("n_head").get<int64_t>();
    const std::string act = j.value("activation_function", "gelu_new");
    if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
      *error = "config.json: activation_function \"" + act + "\" is not supported (gelu_new is)";
      return std::nullopt;
    }
    if (j.contains("n_inner") && !j["n_inner"].is_null() &&
        j["n_inner"].get<int64_t>() != 4 * c.d_model) {
      *error = "config.json: n_inner other than 4 * n_embd is not supported";
      return std::nullopt;
    }
    if (std::abs(j.value("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12) {
      *error = "config.json: layer_norm_epsilon other than 1e-5 is not supported";
      return std::nullopt;
    }
    if (j.value("scale_attn_by_inverse_layer_idx", false) || j.value("reorder_and_upcast_attn", false) ||
        !j.value("scale_attn_weights", true)) {
      *error = "config.json: only GPT-2's standard attention scaling is supported";
      return std::nullopt;
    }
    if (c.vocab_size <= 0 || c.context_length <= 0 || c.n_layer <= 0 || c.n_head <= 0 ||
        c.d_model <= 0 || c.d_model % c.n_head != 0 || c.vocab_size > (1 << 22) ||
        c.context_length > (1 << 20) || c.d_model > (1 << 16) || c.n_layer > 1024) {
      *error = "config.json: sizes out of range or n_embd not divisible by n_head";
      return std::nullopt;
    }
    return c;
  } catch (const json::exception& e) {
    *error = std::string("config.json: ") + e.what();
    return std::nullopt;
  }
}

std::optional<Gpt> LoadHfGpt2(const std::string& dir, std::string* error) {
  std::optional<GptConfig> config = ReadHfGpt2Config(dir, error);
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
      std::string name = t.name.rfind("transformer.", 0) == 0 ? t.name.substr(12) : t.name;
      found[name] = {files.back().get(), &t};
    }
  }

  Gpt model(*config);  // its random initial weights are all overwritten below
  torch::NoGradGuard no_grad;
  const std::map<std::string, NameMap> names = HfNames(*config);
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    const NameMap& n = names.at(item.key());
    auto it = found.find(n.hf);
    if (it == found.end()) {
      *error = "missing tensor " + n.hf;
      return std::nullopt;
    }
    const auto [file, info] = it->second;
    if (info->dtype != DType::kF32 && info->dtype != DType::kF16 && info->dtype != DType::kBF16) {
      *error = n.hf + ": dtype " + std::string(DTypeName(info->dtype)) + " is not a float type";
      return std::nullopt;
    }
    std::vector<int64_t> expected = Sizes(item.value());
    if (n.transposed) std::swap(expected[0], expected[1]);
    if (info->shape != expected) {
      *error = n.hf + ": shape " + ShapeText(info->shape) + ", expected " + ShapeText(expected);
      return std::nullopt;
    }
    std::string_view bytes = file->Data(*info);
    torch::Tensor t = torch::from_blob(const_cast<char*>(bytes.data()), info->shape,
                                       torch::TensorOptions().dtype(TorchDtype(info->dtype)));
    if (n.transposed) t = t.t();
    item.value().copy_(t);  // converts to float32, copies out of the mapping
    used.insert(n.hf);
  }
  for (const auto& [name, unused] : found) {
    // GPT-2's causal-mask buffers and the tied head are not parameters here.
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() &&
             name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool buffer = ends_with(".attn.bias") || ends_with(".attn.masked_bias");
    if (used.count(name) == 0 && !buffer && name != "lm_head.weight") {
      *error = "unexpected tensor " + name;
      return std::nullopt;
    }
  }
  return model;
}

}  // namespace tuneforge::engine
