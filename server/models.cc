#include "server/models.h"

#include "common/model_config.h"

namespace tuneforge {

const std::vector<ModelInfo>& PresetModels() {
  static const std::vector<ModelInfo> kModels = [] {
    std::vector<ModelInfo> models;
    for (const Preset& p : Presets()) {
      models.push_back({p.name, p.description, ArchitectureName(p.config.architecture),
                        ParameterCount(p.config), static_cast<int>(p.config.context_length),
                        static_cast<int>(p.config.vocab_size), "byte-level BPE, no merges"});
    }
    return models;
  }();
  return kModels;
}

const ModelInfo* FindModel(const std::string& id) {
  for (const ModelInfo& m : PresetModels()) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

}  // namespace tuneforge
