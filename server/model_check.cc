#include "server/model_check.h"

#include <filesystem>

#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "text/bpe_tokenizer.h"

namespace tuneforge {
namespace {

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

absl::StatusOr<ModelRecord> CheckModelFolder(const std::map<std::string, std::string>& files) {
  for (const auto& [name, path] : files) {
    if (!IsModelFileName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": not a model file (config.json, *.safetensors, tokenizer files)"));
    }
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
    if (!ec && MaxModelFileBytes(name) > 0 && size > MaxModelFileBytes(name)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", size, " bytes; a ", name,
                                                     " may be at most ", MaxModelFileBytes(name)));
    }
  }
  auto path_of = [&](const std::string& name) -> const std::string* {
    auto it = files.find(name);
    return it == files.end() ? nullptr : &it->second;
  };
  const std::string* config_path = path_of("config.json");
  if (config_path == nullptr) return absl::InvalidArgumentError("config.json is missing");
  std::string text;
  if (!ReadWholeFile(*config_path, &text)) return absl::InternalError("cannot read config.json");
  ASSIGN_OR_RETURN(const ModelConfig config, ParseHfConfig(text));

  // Weights: one file, or the shards the index names.
  std::vector<std::string> shards;
  if (const std::string* index = path_of("model.safetensors.index.json")) {
    ASSIGN_OR_RETURN(const auto weight_map, ReadSafetensorsIndex(*index));
    std::set<std::string> names;
    for (const auto& [tensor, shard] : weight_map) names.insert(shard);
    shards.assign(names.begin(), names.end());
  } else {
    shards.push_back("model.safetensors");
  }
  const std::map<std::string, std::vector<int64_t>> expected = ExpectedTensors(config);
  std::set<std::string> seen;
  std::string dtype;
  for (const std::string& shard : shards) {
    const std::string* path = path_of(shard);
    if (path == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          shard, " is missing", shards.size() > 1 ? " (named by model.safetensors.index.json)" : ""));
    }
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(*path);
    if (!opened.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(shard, ": ", opened.status().message()));
    }
    const SafetensorsFile* file = opened->get();
    for (const TensorInfo& t : file->header().tensors) {
      const std::string name = CanonicalTensorName(t.name, config);
      auto it = expected.find(name);
      if (it == expected.end()) {
        if (IsIgnorableTensor(name, config)) continue;
        return absl::InvalidArgumentError(
            absl::StrCat(shard, ": unexpected tensor ", t.name, " for this config.json"));
      }
      if (t.dtype != DType::kF32 && t.dtype != DType::kBF16 && t.dtype != DType::kF16) {
        return absl::InvalidArgumentError(absl::StrCat(shard, ": ", t.name, " has dtype ",
                                                       std::string(DTypeName(t.dtype)),
                                                       "; F32, BF16 or F16 are supported"));
      }
      if (t.shape != it->second) {
        return absl::InvalidArgumentError(absl::StrCat(shard, ": ", t.name, " has shape ",
                                                       ShapeText(t.shape), ", config.json says ",
                                                       ShapeText(it->second)));
      }
      if (dtype.empty()) dtype = std::string(DTypeName(t.dtype));
      seen.insert(name);
    }
  }
  for (const auto& [name, shape] : expected) {
    if (seen.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name, " ", ShapeText(shape)));
    }
  }

  absl::StatusOr<std::unique_ptr<text::BpeTokenizer>> loaded = absl::InvalidArgumentError(
      "no tokenizer: tokenizer.json, or vocab.json and merges.txt, is needed");
  if (const std::string* p = path_of("tokenizer.json")) {
    if (!ReadWholeFile(*p, &text)) return absl::InternalError("cannot read tokenizer.json");
    loaded = text::BpeTokenizer::FromTokenizerJsonText(text, "tokenizer.json");
  } else if (path_of("vocab.json") && path_of("merges.txt")) {
    loaded = text::BpeTokenizer::FromVocabMerges(*path_of("vocab.json"), *path_of("merges.txt"));
  }
  if (!loaded.ok()) return absl::InvalidArgumentError(loaded.status().message());
  const std::unique_ptr<text::BpeTokenizer>& tokenizer = *loaded;
  if (tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer has ", tokenizer->vocab_size(), " tokens but config.json's vocab_size is ",
        config.vocab_size));
  }
  if (config.eos_token_ids.empty() && !tokenizer->TokenId("<|endoftext|>")) {
    return absl::InvalidArgumentError(
        "no end-of-text token: config.json has no eos_token_id and the tokenizer no "
        "<|endoftext|>");
  }

  ModelRecord m;
  m.model_type = config.model_type;
  m.architecture = ArchitectureName(config.architecture);
  m.parameter_count = ParameterCount(config);
  m.context_length = config.context_length;
  m.vocab_size = config.vocab_size;
  m.dtype = dtype;
  m.tokenizer = absl::StrCat("byte-level BPE, ", tokenizer->vocab_size(), " tokens, ",
                             tokenizer->merge_count(), " merges");
  return m;
}

}  // namespace tuneforge
