// A Transformer (transformer.h) as a Hugging Face model folder: `config.json`
// and `model.safetensors` (or shards listed in `model.safetensors.index.json`)
// with HF's parameter names, so a model trained here loads unchanged into
// transformers (GPT2LMHeadModel, LlamaForCausalLM, ...), and a folder from the
// Hub trains here.
//
//   absl::Status saved = SaveHfModel(model, "out/");
//   absl::StatusOr<Transformer> loaded = LoadHfModel("out/");
//
// Loading accepts F32, F16 and BF16 weights (converted to float32) and GPT-2
// names with or without the "transformer." prefix. Missing, unexpected or
// mis-shaped tensors and unsupported config options are INVALID_ARGUMENT
// with their names; missing files carry their errno's code. Thread-compatible.
#ifndef TUNEFORGE_WORKER_ENGINE_HF_MODEL_H_
#define TUNEFORGE_WORKER_ENGINE_HF_MODEL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "worker/engine/transformer.h"

namespace tuneforge::engine {

// Writes config.json and model.safetensors (float32) into `dir`, creating it.
absl::Status SaveHfModel(Transformer& model, const std::string& dir);

// Reads `dir`/config.json; INVALID_ARGUMENT says what is unsupported.
absl::StatusOr<ModelConfig> ReadHfConfig(const std::string& dir);

// Loads a model folder's config and weights.
absl::StatusOr<Transformer> LoadHfModel(const std::string& dir);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_HF_MODEL_H_
