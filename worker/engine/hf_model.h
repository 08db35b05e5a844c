// A Transformer (transformer.h) as a Hugging Face model folder: `config.json`
// and `model.safetensors` (or shards listed in `model.safetensors.index.json`)
// with HF's parameter names, so a model trained here loads unchanged into
// transformers (GPT2LMHeadModel, LlamaForCausalLM, ...), and a folder from the
// Hub trains here.
//
//   std::string error = SaveHfModel(model, "out/");           // "" on success
//   std::optional<Transformer> loaded = LoadHfModel("out/", &error);
//
// Loading accepts F32, F16 and BF16 weights (converted to float32) and GPT-2
// names with or without the "transformer." prefix. Missing, unexpected or
// mis-shaped tensors and unsupported config options are refused with their
// names. Thread-compatible.
#ifndef TUNEFORGE_WORKER_ENGINE_HF_MODEL_H_
#define TUNEFORGE_WORKER_ENGINE_HF_MODEL_H_

#include <optional>
#include <string>

#include "worker/engine/transformer.h"

namespace tuneforge::engine {

// Writes config.json and model.safetensors (float32) into `dir`, creating it.
std::string SaveHfModel(Transformer& model, const std::string& dir);

// Reads `dir`/config.json; nullopt with `*error` saying what is unsupported.
std::optional<ModelConfig> ReadHfConfig(const std::string& dir, std::string* error);

// Loads a model folder's config and weights.
std::optional<Transformer> LoadHfModel(const std::string& dir, std::string* error);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_HF_MODEL_H_
