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

// Keys and values of the positions decoded so far, per layer: incremental
// decoding computes only the new positions.
struct KvCache {
  std::vector<torch::Tensor> keys;    // per layer (B, H, T_past, D)
  std::vector<torch::Tensor> values;  // per layer (B, H, T_past, D)
  int64_t length = 0;                 // T_past
};

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GptConfig& config);
  // (B, T, C) -> (B, T, C). With a cache, x holds the positions after
  // cache->length, and the layer's keys and values are appended to it.
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache = nullptr, size_t layer = 0);

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
  torch::Tensor forward(torch::Tensor x, KvCache* cache = nullptr,
                        size_t layer = 0);  // (B, T, C) -> (B, T, C)

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

  // ids (B, T) int64 -> logits (B, T, V). With a cache, ids are the
  // positions after cache->length, and the cache grows by T.
  torch::Tensor forward(const torch::Tensor& ids, KvCache* cache = nullptr);

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

struct SamplingOptions {
  int max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // nucleus: sample from the smallest set with this mass
  uint64_t seed = 0;         // sampling is deterministic for a seed
  int64_t stop_token = -1;   // ends generation; not returned
};

// Continues `prompt` (token ids, at least one); returns only the new tokens.
// Stops at max_new_tokens, the stop token, or the context length. With
// use_cache, each step runs the model on one new position (KV cache);
// without, on the whole sequence: the two give the same tokens.
std::vector<int64_t> Generate(Gpt& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options, bool use_cache = true);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_GPT_H_
