// The built-in model presets that jobs can name as their base model.
//
// Thread-safe: immutable data.
#ifndef TUNEFORGE_SERVER_MODELS_H_
#define TUNEFORGE_SERVER_MODELS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tuneforge {

struct ModelInfo {
  std::string id;            // e.g. "tiny-gpt2"
  std::string display_name;
  std::string architecture;  // e.g. "gpt"
  int64_t parameter_count = 0;
  int context_length = 0;
  int vocab_size = 0;
  std::string tokenizer;     // e.g. "byte"
};

const std::vector<ModelInfo>& PresetModels();
// nullptr when no model has this id.
const ModelInfo* FindModel(const std::string& id);

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_MODELS_H_
