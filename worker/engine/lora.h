// LoRA (Hu et al.): low-rank adapters on chosen projections, the base
// weights frozen and held once; only the adapters train. Saved in PEFT's
// format, so the adapter loads into Hugging Face PEFT as it is:
//
//   adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
//                                 "target_modules": ["q_proj", "v_proj"], ...}
//   adapter_model.safetensors    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
//                                (r, in) and ...lora_B.weight (out, r)
//
// and merged into the base (W += alpha / r * B A) for a plain model folder.
//
//   LoraOptions o{8, 16.0, 0.0, {}};         // targets: the family's default
//   EnableLora(model, o);                    // adapters added, the rest frozen
//   ... train ...
//   SaveAdapter(model, o, "tiny-llama", "out/adapter");
//   MergeLora(model);  SaveHfModel(model, "out/");
//
// Not thread-safe.
#ifndef TUNEFORGE_WORKER_ENGINE_LORA_H_
#define TUNEFORGE_WORKER_ENGINE_LORA_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

#include "worker/engine/lora_options.h"
#include "worker/engine/transformer.h"

namespace tuneforge::engine {

std::vector<std::string> DefaultLoraTargets(const ModelConfig& c);

// Adds adapters to the matching projections and freezes every other
// parameter; returns the adapted projections' names. Throws
// std::invalid_argument when a target matches nothing.
std::vector<std::string> EnableLora(Transformer& model, const LoraOptions& options);

// Writes adapter_config.json and adapter_model.safetensors into `dir`.
absl::Status SaveAdapter(Transformer& model, const LoraOptions& options,
                         const std::string& base_model, const std::string& dir);

// Copies a saved adapter's tensors into the model's (after EnableLora with
// the same options); INVALID_ARGUMENT when the adapter does not fit.
absl::Status LoadAdapter(Transformer& model, const std::string& dir);

// Folds every adapter into its base weight.
void MergeLora(Transformer& model);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_LORA_H_
