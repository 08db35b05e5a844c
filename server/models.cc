#include "server/models.h"

namespace tuneforge {

const std::vector<ModelInfo>& PresetModels() {
  // tiny-gpt: the engine's TinyGptConfig (V=258, T=256, C=128, 4 layers):
  // wte + wpe + 4 * (12 C^2 + 13 C) + 2 C parameters.
  static const std::vector<ModelInfo> kPresets = {
      {"tiny-gpt", "Tiny GPT (byte tokenizer, random init from the job's seed)", "gpt",
       258 * 128 + 256 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128, 256, 258, "byte"},
  };
  return kPresets;
}

const ModelInfo* FindModel(const std::string& id) {
  for (const ModelInfo& m : PresetModels()) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

}  // namespace tuneforge
