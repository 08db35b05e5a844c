#include "worker/engine/model_folder.h"

#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/engine/hf_model.h"

namespace tuneforge::engine {
namespace {

// Tokenizer and generation files a Hub folder carries beside the weights.
constexpr const char* kSideFiles[] = {"tokenizer.json",   "tokenizer_config.json",
                                      "special_tokens_map.json", "vocab.json",
                                      "merges.txt",       "generation_config.json"};

// The presets' tokenizer: byte-level, with the pre-tokenizer of their family.
absl::Status WritePresetTokenizer(const ModelConfig& c, const std::string& dir) {
  const char* pattern = c.architecture == Architecture::kLlama ? BpeTokenizer::kLlama3Pattern
                                                               : BpeTokenizer::kGpt2Pattern;
  std::ofstream out(dir + "/tokenizer.json");
  out << ByteLevelTokenizerJson(pattern, {"<|endoftext|>", "<|pad|>"});
  if (!out.flush()) return absl::ErrnoToStatus(errno, "cannot write " + dir + "/tokenizer.json");
  return absl::OkStatus();
}

}  // namespace

absl::Status WritePreset(const Preset& preset, uint64_t seed, const std::string& dir) {
  torch::manual_seed(seed);
  Transformer model(preset.config);
  RETURN_IF_ERROR(SaveHfModel(model, dir));
  return WritePresetTokenizer(preset.config, dir);
}

absl::StatusOr<ModelFolder> LoadModelFolder(const std::string& dir) {
  ModelFolder m;
  ASSIGN_OR_RETURN(m.model, LoadHfModel(dir));
  ASSIGN_OR_RETURN(m.tokenizer, BpeTokenizer::FromModelFolder(dir));
  for (const char* name : kSideFiles) {
    std::string bytes;
    if (ReadWholeFile(dir + "/" + name, &bytes)) m.side_files[name] = std::move(bytes);
  }
  const ModelConfig& c = m.model->config();
  if (m.tokenizer->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(
        dir + ": the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
        " tokens but the model's vocabulary only " + std::to_string(c.vocab_size));
  }
  m.stop_ids = c.eos_token_ids;
  if (m.stop_ids.empty()) {
    if (auto id = m.tokenizer->TokenId("<|endoftext|>")) m.stop_ids.push_back(*id);
  }
  if (m.stop_ids.empty()) {
    return absl::InvalidArgumentError(dir +
                                      ": no end-of-text token (config.json has no eos_token_id, "
                                      "and the tokenizer no <|endoftext|>)");
  }
  m.pad_id = m.tokenizer->TokenId("<|pad|>").value_or(m.stop_ids[0]);
  return m;
}

absl::StatusOr<ModelFolder> OpenModel(const std::string& name_or_dir, uint64_t seed) {
  const Preset* preset = FindPreset(name_or_dir);
  if (preset == nullptr) {
    if (!std::filesystem::is_directory(name_or_dir)) {
      std::string names;
      for (const Preset& p : Presets()) names += (names.empty() ? "" : ", ") + p.name;
      return absl::NotFoundError("model '" + name_or_dir + "' is neither a preset (" + names +
                                 ") nor a folder");
    }
    return LoadModelFolder(name_or_dir);
  }
  std::string scratch = (std::filesystem::temp_directory_path() / "tuneforge-preset-XXXXXX").string();
  if (mkdtemp(scratch.data()) == nullptr) {
    return absl::ErrnoToStatus(errno,
                               "cannot create a temporary folder for preset " + preset->name);
  }
  absl::Status written = WritePreset(*preset, seed, scratch);
  absl::StatusOr<ModelFolder> m = written.ok() ? LoadModelFolder(scratch) : written;
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);
  return m;
}

absl::Status SaveModelFolder(ModelFolder& m, const std::string& dir) {
  RETURN_IF_ERROR(SaveHfModel(m.model, dir));
  for (const auto& [name, bytes] : m.side_files) {
    std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
    out << bytes;
    if (!out.flush()) return absl::ErrnoToStatus(errno, "cannot write " + dir + "/" + name);
  }
  return absl::OkStatus();
}

}  // namespace tuneforge::engine
