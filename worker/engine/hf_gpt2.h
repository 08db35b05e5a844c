// The GPT of gpt.h as a Hugging Face GPT-2 model folder: `config.json`
// (model_type "gpt2") and `model.safetensors` with HF's parameter names and
// Conv1D weight layout, so a model trained here loads unchanged into
// transformers' GPT2LMHeadModel, and an HF GPT-2 folder trains here.
//
//   std::string error = SaveHfGpt2(model, "out/");           // "" on success
//   std::optional<Gpt> loaded = LoadHfGpt2("out/", &error);
//
// Names: "transformer.wte.weight", "transformer.h.{i}.attn.c_attn.weight", ...
// are written; files with or without the "transformer." prefix are read. HF's
// Conv1D stores weights as (in, out): the transpose of torch::nn::Linear's.
// Missing, unexpected or mis-shaped tensors and unsupported config options
// are refused with their names. Thread-compatible.
#ifndef TUNEFORGE_WORKER_ENGINE_HF_GPT2_H_
#define TUNEFORGE_WORKER_ENGINE_HF_GPT2_H_

#include <optional>
#include <string>

#include "worker/engine/gpt.h"

namespace tuneforge::engine {

// Writes config.json and model.safetensors (float32) into `dir`, creating it.
std::string SaveHfGpt2(Gpt& model, const std::string& dir);

// Reads a GPT-2 config.json into a GptConfig; unsupported options are errors.
std::optional<GptConfig> ReadHfGpt2Config(const std::string& dir, std::string* error);

// Loads a GPT-2 folder (model.safetensors, or shards with
// model.safetensors.index.json; F32, F16 or BF16 weights).
std::optional<Gpt> LoadHfGpt2(const std::string& dir, std::string* error);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_HF_GPT2_H_
