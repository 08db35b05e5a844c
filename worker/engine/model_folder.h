// A model folder in use: a Transformer and its tokenizer, loaded from a
// Hugging Face folder (config.json, safetensors, tokenizer.json or
// vocab.json + merges.txt), or a built-in preset written as such a folder
// first, so presets and Hub models go through the same loader.
//
//   absl::StatusOr<ModelFolder> m = OpenModel("tiny-llama", /*seed=*/42);
//   std::vector<int64_t> ids = m->tokenizer->Encode("Hello");
//   absl::Status saved = SaveModelFolder(*m, "out/");  // weights, config, tokenizer
//
// A folder that is broken or unsupported is INVALID_ARGUMENT saying what is
// wrong and where; a missing one NOT_FOUND.
//
// Thread-compatible.
#ifndef TUNEFORGE_WORKER_ENGINE_MODEL_FOLDER_H_
#define TUNEFORGE_WORKER_ENGINE_MODEL_FOLDER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "text/bpe_tokenizer.h"
#include "worker/engine/transformer.h"

namespace tuneforge::engine {

// The tokenizer is the text library's (text/bpe_tokenizer.h).
using text::BpeTokenizer;
using text::ByteLevelTokenizerJson;

struct ModelFolder {
  Transformer model{nullptr};
  // Tokenizer and generation files as read (tokenizer.json, vocab.json, ...),
  // written again beside the weights by SaveModelFolder.
  std::map<std::string, std::string> side_files;
  std::unique_ptr<BpeTokenizer> tokenizer;
  std::vector<int64_t> stop_ids;  // end of text: config's eos_token_id, else <|endoftext|>
  int64_t pad_id = 0;             // fills batches; never attended to nor trained on
};

// Writes a preset, random from `seed`, as a folder: config.json,
// model.safetensors, tokenizer.json (byte-level, see ByteLevelTokenizerJson).
absl::Status WritePreset(const Preset& preset, uint64_t seed, const std::string& dir);

// Loads a model folder; checks that the tokenizer fits the model's vocabulary.
absl::StatusOr<ModelFolder> LoadModelFolder(const std::string& dir);

// A preset name (written under a fresh temporary folder, removed again once
// loaded) or a model folder's path.
absl::StatusOr<ModelFolder> OpenModel(const std::string& name_or_dir, uint64_t seed);

// Saves weights, config and the side files, so `dir` is a complete model
// folder (written in place; see SaveCheckpoint for atomic saves).
absl::Status SaveModelFolder(ModelFolder& m, const std::string& dir);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_MODEL_FOLDER_H_
