// What differs between model families. Each family lives in a file of its
// own that reads top to bottom (its attention, MLP and block, then its names,
// positions and initialisation): gpt2.cc, llama.cc. The transformer
// (transformer.h) is the frame they share; LoRA and the Hugging Face folder
// code read the family's names and quirks from here, never from branches.
//
// Adding a family: a file like llama.cc defining its blocks and a Family,
// and a case in FamilyOf().
#ifndef TUNEFORGE_WORKER_ENGINE_FAMILY_H_
#define TUNEFORGE_WORKER_ENGINE_FAMILY_H_

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/model_config.h"
#include "worker/engine/transformer.h"

namespace tuneforge::engine {

struct Family {
  // Hugging Face's module names: token embeddings, the block list, the final
  // norm; `positions` names learned position embeddings ("" for rotary).
  const char* embed;
  const char* positions;
  const char* blocks;
  const char* final_norm;
  bool rms_norm;  // RMSNorm; else LayerNorm with a bias
  // One block, its parameters registered under Hugging Face's names in the
  // order of its checkpoints (the random initialisation draws in that order).
  std::shared_ptr<BlockImpl> (*make_block)(const ModelConfig& c);
  // (D/2) rotary inverse frequencies; nullptr for learned positions.
  torch::Tensor (*rotary_inv_freq)(const ModelConfig& c);
  // Whether a matrix starts at N(0, 0.02 / sqrt(2 * n_layer)) instead of
  // N(0, 0.02) (GPT-2's residual projections).
  bool (*residual_scaled)(const std::string& name);
  // Our parameter name -> the name in the family's safetensors files, and
  // whether the file stores the transpose (GPT-2's Conv1D: (in, out)).
  std::string (*hf_name)(const std::string& ours, bool* transposed);
  // LoRA: the projections adapted by default, and PEFT's fan_in_fan_out.
  std::vector<std::string> default_lora_targets;
  bool fan_in_fan_out;
};

const Family& Gpt2Family();
const Family& LlamaFamily();
const Family& FamilyOf(const ModelConfig& c);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_FAMILY_H_
