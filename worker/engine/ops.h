// The transformer's operations, each two ways: a fused CPU kernel
// (cpu_kernels.h, attention_kernels.h) that runs its forward and its
// backward pass in one sweep over memory, split between the intra-op
// threads; or the same formula as a chain of libtorch operations (and
// temporaries), which is what runs on CUDA, in bf16, and with fused = false
// (for comparison, and as the tests' reference). The kernels take float32
// tensors on the CPU (FusedApplies); elsewhere `fused` changes nothing.
//
//   torch::Tensor h = GeluTanh(x, /*fused=*/true);
//   torch::Tensor y = CausalAttention(q, k, v, AttentionOptions{});
//
// Dimensions as in transformer.h. Not thread-safe in the sense of autograd:
// one graph per thread.
#ifndef TUNEFORGE_WORKER_ENGINE_OPS_H_
#define TUNEFORGE_WORKER_ENGINE_OPS_H_

#include <torch/torch.h>

#include <cstdint>

namespace tuneforge::engine {

// Whether the fused kernels take x: float32 on the CPU.
bool FusedApplies(const torch::Tensor& x);

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's activation; any shape.
torch::Tensor GeluTanh(const torch::Tensor& x, bool fused);

// silu(gate) * up, Llama's MLP; both of one shape.
torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up, bool fused);

// RMSNorm over the last dimension in float32, as HF's LlamaRMSNorm:
// weight * x / sqrt(mean(x^2) + eps).
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool fused);

// Rotary embedding angles of the positions of one forward pass.
struct Rope {
  torch::Tensor cos;       // (T, D), or (B, T, D) where rows differ (packing)
  torch::Tensor sin;       // (T, D), or (B, T, D)
  torch::Tensor cos_half;  // the first halves, (T, D/2) or (B, T, D/2): the
  torch::Tensor sin_half;  // second halves repeat them (HF's layout)
};

// HF's rotary embedding (rotate_half) of a projection's output x
// (B, T, N * D), returned as heads (B, T, N, D).
torch::Tensor RotaryEmbedding(const torch::Tensor& x, int64_t heads, const Rope& rope, bool fused);

struct AttentionOptions {
  int64_t past = 0;    // queries are the positions past..past+T-1 of the keys
  int64_t window = 0;  // a query sees fewer than `window` keys back; 0: all
  double dropout = 0;  // on the probabilities (libtorch's path only)
  torch::ScalarType matmul_dtype = torch::kFloat32;  // of the products (libtorch's path)
  bool fused = true;
  // Packed rows (past 0): (N, 3) int64 on the CPU, {row, start, length} of
  // each sequence, in row order, each row's sequences tiling it from
  // position 0; a sequence attends only within itself, and positions after
  // a row's last sequence (padding) get zeros. Undefined: each row is one
  // sequence.
  torch::Tensor spans;
};

// Causal attention of q (B, T, H, D) over k, v (B, S, K, D), S = past + T,
// K dividing H: query head h uses key head h / (H / K). Each query sees the
// keys at or before its position (and within the window); scores scaled by
// 1/sqrt(D), softmax in float32. q, k and v may be strided views with a
// contiguous last dimension (the slices of a fused QKV projection). Returns
// (B, T, H, D), contiguous. The fused kernel (no dropout, float32) keeps
// O(T) per head for backward instead of the T x S probabilities, and skips
// the keys no query of a block sees.
torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const AttentionOptions& options);

// Sum over rows of the cross-entropy of logits (N, V) against targets (N)
// int64; rows whose target is ignore_index add nothing. A () float tensor.
torch::Tensor CrossEntropySum(const torch::Tensor& logits, const torch::Tensor& targets,
                              int64_t ignore_index, bool fused);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_OPS_H_
