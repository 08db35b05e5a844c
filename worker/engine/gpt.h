// A GPT-style decoder-only transformer in libtorch.
//
// Dimensions used in shape comments throughout the engine:
//   B  batch size          T  sequence length (<= context_length)
//   C  channels (d_model)  V  vocabulary size
//   H  attention heads     D  head size (C / H)
//
// Token and learned position embeddings, n_layer pre-norm blocks of causal
// self-attention and a GELU MLP, a final layer norm, and an output head tied to
// the token embedding.
//
//   GptConfig config = *PresetConfig("tiny-gpt");
//   torch::manual_seed(42);
//   Gpt model(config);
//   torch::Tensor logits = model->forward(ids);  // (B, T) -> (B, T, V)
//
// Not thread-safe: one model per training thread.
#ifndef TUNEFORGE_WORKER_ENGINE_GPT_H_
#define TUNEFORGE_WORKER_ENGINE_GPT_H_

#include <cstdint>

#include <torch/torch.h>

#include "worker/engine/model_config.h"

namespace tuneforge::engine {

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GptConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, C) -> (B, T, C)

 private:
  int64_t n_head_;
  double dropout_;
  torch::nn::Linear qkv_{nullptr};   // C -> 3C
  torch::nn::Linear proj_{nullptr};  // C -> C
  torch::Tensor causal_mask_;        // (T_max, T_max) bool, true above the diagonal
};
TORCH_MODULE(CausalSelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const GptConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, C) -> (B, T, C)

 private:
  torch::nn::Linear fc_{nullptr};    // C -> 4C
  torch::nn::Linear proj_{nullptr};  // 4C -> C
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const GptConfig& config);
  torch::Tensor forward(torch::Tensor x);  // (B, T, C) -> (B, T, C)

 private:
  torch::nn::LayerNorm ln1_{nullptr};
  CausalSelfAttention attn_{nullptr};
  torch::nn::LayerNorm ln2_{nullptr};
  Mlp mlp_{nullptr};
};
TORCH_MODULE(Block);

class GptImpl : public torch::nn::Module {
 public:
  explicit GptImpl(const GptConfig& config);

  // ids (B, T) int64 -> logits (B, T, V).
  torch::Tensor forward(const torch::Tensor& ids);

  const GptConfig& config() const { return config_; }
  int64_t ParameterCount() const;

 private:
  GptConfig config_;
  torch::nn::Embedding wte_{nullptr};  // (V, C), also the output head
  torch::nn::Embedding wpe_{nullptr};  // (T_max, C)
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm ln_f_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(Gpt);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_GPT_H_
