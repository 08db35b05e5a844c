// Model shapes of the built-in presets, with no libtorch include, so the
// scheduler can list them (and their parameter counts) without the engine.
//
// Thread-safe: pure functions over constants.
#ifndef TUNEFORGE_WORKER_ENGINE_MODEL_CONFIG_H_
#define TUNEFORGE_WORKER_ENGINE_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tuneforge::engine {

struct GptConfig {
  int64_t vocab_size = 258;       // e.g. 258 for the byte tokenizer
  int64_t context_length = 256;   // longest sequence, e.g. 256
  int64_t n_layer = 4;            // transformer blocks, e.g. 4
  int64_t n_head = 4;             // attention heads, e.g. 4; divides d_model
  int64_t d_model = 128;          // channels, e.g. 128
  double dropout = 0.0;           // e.g. 0.0 (fine-tuning usually needs none)
};

struct Preset {
  std::string name;         // e.g. "tiny-gpt"
  std::string description;
  GptConfig config;
};

// tiny-gpt: 0.86M parameters, for tests and the demo.
// small-gpt: 25M parameters (d_model 512), for benchmarks.
inline const std::vector<Preset>& Presets() {
  static const std::vector<Preset> kPresets = {
      {"tiny-gpt", "Tiny GPT: 4 layers, d_model 128, byte tokenizer, random init from the seed",
       GptConfig{258, 256, 4, 4, 128, 0.0}},
      {"small-gpt", "Small GPT: 8 layers, d_model 512, byte tokenizer, random init from the seed",
       GptConfig{258, 512, 8, 8, 512, 0.0}},
  };
  return kPresets;
}

inline std::optional<GptConfig> PresetConfig(const std::string& name) {
  for (const Preset& p : Presets()) {
    if (p.name == name) return p.config;
  }
  return std::nullopt;
}

// Parameters of the GPT in gpt.h: token and position embeddings, per block
// two LayerNorms (4C), QKV (3C^2 + 3C), projection (C^2 + C) and MLP
// (8C^2 + 5C), and the final LayerNorm; the head is tied to the embedding.
inline int64_t ParameterCount(const GptConfig& c) {
  const int64_t C = c.d_model;
  return c.vocab_size * C + c.context_length * C + c.n_layer * (12 * C * C + 13 * C) + 2 * C;
}

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_MODEL_CONFIG_H_
