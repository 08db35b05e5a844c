#include "worker/engine/model_folder.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "worker/engine/hf_model.h"

namespace tuneforge::engine {
namespace {

// Tokenizer and generation files a Hub folder carries beside the weights.
constexpr const char* kSideFiles[] = {"tokenizer.json",   "tokenizer_config.json",
                                      "special_tokens_map.json", "vocab.json",
                                      "merges.txt",       "generation_config.json"};

// The presets' tokenizer: byte-level, with the pre-tokenizer of their family.
std::string WritePresetTokenizer(const ModelConfig& c, const std::string& dir) {
  const char* pattern = c.architecture == Architecture::kLlama ? BpeTokenizer::kLlama3Pattern
                                                               : BpeTokenizer::kGpt2Pattern;
  std::ofstream out(dir + "/tokenizer.json");
  out << ByteLevelTokenizerJson(pattern, {"<|endoftext|>", "<|pad|>"});
  return out.flush() ? "" : "cannot write " + dir + "/tokenizer.json";
}

}  // namespace

std::string WritePreset(const Preset& preset, uint64_t seed, const std::string& dir) {
  torch::manual_seed(seed);
  Transformer model(preset.config);
  if (std::string error = SaveHfModel(model, dir); !error.empty()) return error;
  return WritePresetTokenizer(preset.config, dir);
}

std::optional<ModelFolder> LoadModelFolder(const std::string& dir, std::string* error) {
  ModelFolder m;
  std::optional<Transformer> model = LoadHfModel(dir, error);
  if (!model) return std::nullopt;
  m.model = *model;
  m.tokenizer = BpeTokenizer::FromModelFolder(dir, error);
  if (!m.tokenizer) return std::nullopt;
  for (const char* name : kSideFiles) {
    std::string bytes;
    if (ReadWholeFile(dir + "/" + name, &bytes)) m.side_files[name] = std::move(bytes);
  }
  const ModelConfig& c = m.model->config();
  if (m.tokenizer->vocab_size() > c.vocab_size) {
    *error = dir + ": the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
             " tokens but the model's vocabulary only " + std::to_string(c.vocab_size);
    return std::nullopt;
  }
  m.stop_ids = c.eos_token_ids;
  if (m.stop_ids.empty()) {
    if (auto id = m.tokenizer->TokenId("<|endoftext|>")) m.stop_ids.push_back(*id);
  }
  if (m.stop_ids.empty()) {
    *error = dir + ": no end-of-text token (config.json has no eos_token_id, and the "
             "tokenizer no <|endoftext|>)";
    return std::nullopt;
  }
  m.pad_id = m.tokenizer->TokenId("<|pad|>").value_or(m.stop_ids[0]);
  return m;
}

std::optional<ModelFolder> OpenModel(const std::string& name_or_dir, uint64_t seed,
                                     std::string* error) {
  const Preset* preset = FindPreset(name_or_dir);
  if (preset == nullptr) {
    if (!std::filesystem::is_directory(name_or_dir)) {
      std::string names;
      for (const Preset& p : Presets()) names += (names.empty() ? "" : ", ") + p.name;
      *error = "model '" + name_or_dir + "' is neither a preset (" + names + ") nor a folder";
      return std::nullopt;
    }
    return LoadModelFolder(name_or_dir, error);
  }
  std::string scratch = (std::filesystem::temp_directory_path() / "tuneforge-preset-XXXXXX").string();
  if (mkdtemp(scratch.data()) == nullptr) {
    *error = "cannot create a temporary folder for preset " + preset->name;
    return std::nullopt;
  }
  std::optional<ModelFolder> m;
  *error = WritePreset(*preset, seed, scratch);
  if (error->empty()) m = LoadModelFolder(scratch, error);
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);
  return m;
}

std::string SaveModelFolder(ModelFolder& m, const std::string& dir) {
  if (std::string error = SaveHfModel(m.model, dir); !error.empty()) return error;
  for (const auto& [name, bytes] : m.side_files) {
    std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
    out << bytes;
    if (!out.flush()) return "cannot write " + dir + "/" + name;
  }
  return "";
}

}  // namespace tuneforge::engine
