// Decoder-only transformers in libtorch: the frame every family shares
// (embeddings, the blocks in order, the final norm, the head, KV caches,
// recomputation, generation), with each family's blocks and quirks in a file
// of its own (gpt2.cc: GPT-2; llama.cc: Llama 2/3, Mistral, Qwen2, SmolLM,
// TinyLlama; see family.h). Parameter names are Hugging Face's, so loading
// and saving is a rename of the prefix ("transformer." or "model.").
//
// Dimensions used in shape comments throughout the engine:
//   B  batch size          T  sequence length (<= context_length)
//   C  channels (d_model)  V  vocabulary size
//   H  query heads         K  key/value heads (grouped-query attention)
//   D  head size           F  MLP hidden width
//
//   ModelConfig config = FindPreset("tiny-llama")->config;
//   torch::manual_seed(42);
//   Transformer model(config);
//   torch::Tensor logits = model->forward(ids);  // (B, T) -> (B, T, V)
//
// Not thread-safe: one model per training thread.
#ifndef TUNEFORGE_WORKER_ENGINE_TRANSFORMER_H_
#define TUNEFORGE_WORKER_ENGINE_TRANSFORMER_H_

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "common/model_config.h"
#include "worker/engine/ops.h"

namespace tuneforge::engine {

// Keys and values of the positions decoded so far, per layer: incremental
// decoding computes only the new positions.
struct KvCache {
  std::vector<torch::Tensor> keys;    // per layer (B, T_past, K, D)
  std::vector<torch::Tensor> values;  // per layer (B, T_past, K, D)
  int64_t length = 0;                 // T_past
};

// Several sequences packed into one row: each token attends only to earlier
// tokens of its own sequence (attention is computed per sequence, so it
// costs what the sequences cost, not the row), and positions restart at 0
// with each one, so a packed row computes what its sequences would alone.
struct Packing {
  torch::Tensor positions;  // (B, T) int64: position within its sequence
  // (N, 3) int64 on the CPU: {row, start, length} of each sequence, in row
  // order, each row's sequences tiling it from position 0; the rest of a row
  // is padding.
  torch::Tensor spans;
};

// How the model computes. Master weights stay float32; with bf16 the matrix
// products (projections, attention, head) run in bfloat16 and everything
// else (norms, softmax, residuals, loss) in float32, which is what autocast
// does on CUDA. Recomputation keeps only each block's input for backward and
// recomputes the block then (less memory, about a third more compute).
// Fused kernels (ops.h) compute RMSNorm, rotary embeddings, activations,
// attention and the loss of float32 CPU tensors in one pass each; off, the
// same formulas run as libtorch operations (as on CUDA).
struct ComputeOptions {
  torch::ScalarType matmul_dtype = torch::kFloat32;  // or torch::kBFloat16
  bool recompute_activations = false;
  bool fused_kernels = true;
};

// A module whose computation follows ComputeOptions; SetCompute() on the
// model reaches every one.
class ComputeAware {
 public:
  virtual ~ComputeAware() = default;
  virtual void SetCompute(const ComputeOptions& options) = 0;
};

// A linear projection (weight (out, in), optional bias, as torch::nn::Linear
// names them) that can carry a LoRA adapter: y = x W^T + b + s * B(A(drop(x)))
// with A (r, in), B (out, r) and s = alpha / r, PEFT's layout and names
// ("q_proj.lora_A.weight").
class ProjectionImpl : public torch::nn::Module, public ComputeAware {
 public:
  ProjectionImpl(int64_t in, int64_t out, bool bias);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, in) -> (B, T, out)
  void SetCompute(const ComputeOptions& o) override { matmul_dtype_ = o.matmul_dtype; }

  // Adds an adapter of rank r: A from PEFT's init (Kaiming uniform), B zero,
  // so the output is unchanged until training moves B.
  void AddLora(int64_t rank, double alpha, double dropout);
  bool has_lora() const { return lora_a_.defined(); }
  // W += s * B A; the adapter stays (a merged model is saved without it).
  void MergeLora();

  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out), or undefined

 private:
  torch::Tensor lora_a_;  // (r, in), registered as lora_A.weight
  torch::Tensor lora_b_;  // (out, r), registered as lora_B.weight
  double lora_scale_ = 0;
  double lora_dropout_ = 0;
  torch::ScalarType matmul_dtype_ = torch::kFloat32;
};
TORCH_MODULE(Projection);

// LayerNorm (weight and bias; GPT-2) or RMSNorm (weight; Llama).
class NormImpl : public torch::nn::Module, public ComputeAware {
 public:
  NormImpl(int64_t dim, double eps, bool rms);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, C) -> (B, T, C)
  void SetCompute(const ComputeOptions& o) override { fused_ = o.fused_kernels; }

 private:
  double eps_;
  bool rms_;
  bool fused_ = true;
  torch::Tensor weight_;  // (C)
  torch::Tensor bias_;    // (C), LayerNorm only
};
TORCH_MODULE(Norm);

// One block of a family (family.h): (B, T, C) -> (B, T, C). `rope` is null
// for families with learned positions. With a cache, x holds the positions
// after cache->length, and the block's attention appends its keys and
// values to layer `layer`. `spans` (Packing::spans) makes each packed
// sequence attend within itself; undefined: the row is one causal sequence.
class BlockImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x, const Rope* rope, KvCache* cache, size_t layer,
                                const torch::Tensor& spans) = 0;
};

// Causal attention of q (B, T, H, D) over k and v (B, T, K, D), after
// appending them to the cache's layer (when a cache is given): each group of
// H/K query heads shares one key/value head. Returns (B, T, H*D).
torch::Tensor AttendCausally(const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                             const ModelConfig& c, KvCache* cache, size_t layer,
                             const torch::Tensor& spans, bool training,
                             const ComputeOptions& compute);

struct Family;

class TransformerImpl : public torch::nn::Module {
 public:
  // Random initial weights: N(0, 0.02), and the family's own rules.
  explicit TransformerImpl(const ModelConfig& config);

  // ids (B, T) int64 -> logits (B, T, V) float32. With a cache, ids are the
  // positions after cache->length, and the cache grows by T. With `packing`,
  // each row holds several sequences (no cache then).
  torch::Tensor forward(const torch::Tensor& ids, KvCache* cache = nullptr,
                        const Packing* packing = nullptr);

  void SetCompute(const ComputeOptions& options);
  const ComputeOptions& compute() const { return compute_; }
  const ModelConfig& config() const { return config_; }
  int64_t ParameterCount() const;

  // The HF safetensors name of one of our parameters, e.g. "h.0.ln_1.weight"
  // -> "transformer.h.0.ln_1.weight", "layers.0.mlp.up_proj.weight" ->
  // "model.layers.0.mlp.up_proj.weight"; `*transposed` is set where HF's
  // GPT-2 Conv1D stores (in, out), the transpose of a Linear weight.
  std::string HfName(const std::string& ours, bool* transposed) const;

 private:
  // Angles of positions past..past+T, or of `positions` (B, T) when defined.
  Rope RopeFor(int64_t past, int64_t T, const torch::Tensor& positions,
               const torch::Device& device) const;

  ModelConfig config_;
  const Family& family_;
  ComputeOptions compute_;
  torch::nn::Embedding embed_{nullptr};  // (V, C): wte or embed_tokens
  torch::nn::Embedding wpe_{nullptr};    // (T_max, C), learned positions (GPT-2)
  torch::nn::ModuleList blocks_{nullptr};  // h or layers
  Norm norm_f_{nullptr};                  // ln_f or norm
  Projection lm_head_{nullptr};           // C -> V, untied heads only
  torch::nn::Dropout drop_{nullptr};
  torch::Tensor inv_freq_;                // (D/2) rotary frequencies, rotary families only
};
TORCH_MODULE(Transformer);

struct SamplingOptions {
  int max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // nucleus: sample from the smallest set with this mass
  uint64_t seed = 0;         // sampling is deterministic for a seed
  std::vector<int64_t> stop_tokens;  // end generation; not returned
};

// Continues `prompt` (token ids, at least one); returns only the new tokens.
// Stops at max_new_tokens, a stop token, or the context length. With
// use_cache, each step runs the model on one new position (KV cache);
// without, on the whole sequence: the two give the same tokens.
std::vector<int64_t> Generate(Transformer& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options, bool use_cache = true);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_TRANSFORMER_H_
