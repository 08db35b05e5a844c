// LoRA's settings, with no libtorch include (trainer.h and the worker use
// them); the adapters themselves are in lora.h.
#ifndef TUNEFORGE_WORKER_ENGINE_LORA_OPTIONS_H_
#define TUNEFORGE_WORKER_ENGINE_LORA_OPTIONS_H_

#include <string>
#include <vector>

namespace tuneforge::engine {

struct LoraOptions {
  int rank = 0;         // 0: no LoRA (full fine-tuning); e.g. 8
  double alpha = 16.0;  // the update is scaled by alpha / rank
  double dropout = 0.0; // on the adapter's input, while training
  // Projection names matched as suffixes on a "." boundary, as PEFT does
  // ("c_proj" matches attn.c_proj and mlp.c_proj); empty: PEFT's default for
  // the family (Llama: q_proj, v_proj; GPT-2: c_attn).
  std::vector<std::string> targets;
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_LORA_OPTIONS_H_
