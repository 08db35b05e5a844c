// The fused CPU kernels (cpu_kernels.h, attention_kernels.h) as autograd
// functions: each runs its forward and backward pass in one sweep over
// memory, split between the intra-op threads, instead of the chain of tensor
// operations (and temporaries) that the same formula costs when written with
// libtorch's operations. They apply to float32 tensors on the CPU (FusedApplies);
// elsewhere (CUDA, bf16) the model computes the same formulas with
// libtorch's operations, and tests hold the two to the same values and
// gradients.
//
//   if (FusedApplies(x)) y = FusedGeluTanh(x);  // same as torch::gelu(x, "tanh")
//
// Not thread-safe in the sense of autograd: one graph per thread.
#ifndef TUNEFORGE_WORKER_ENGINE_FUSED_OPS_H_
#define TUNEFORGE_WORKER_ENGINE_FUSED_OPS_H_

#include <cstdint>

#include <torch/torch.h>

namespace tuneforge::engine {

// Whether the fused kernels take x: float32 on the CPU.
bool FusedApplies(const torch::Tensor& x);

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), any shape.
torch::Tensor FusedGeluTanh(const torch::Tensor& x);

// silu(gate) * up, both of one shape.
torch::Tensor FusedSwiGlu(const torch::Tensor& gate, const torch::Tensor& up);

// RMSNorm over the last dimension: weight * x / sqrt(mean(x^2) + eps).
torch::Tensor FusedRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotary embedding in HF's half-rotation layout, applied to a projection's
// output x (B, T, N * D) and returned as heads (B, T, N, D), contiguous.
// cos_half and sin_half: (T, D/2), or (B, T, D/2) where positions differ by
// row (packing).
torch::Tensor FusedRope(const torch::Tensor& x, int64_t heads, const torch::Tensor& cos_half,
                        const torch::Tensor& sin_half);

// Causal attention (attention_kernels.h) of q (B, T, H, D) over k, v
// (B, S, K, D), K dividing H (grouped-query attention reads each key head
// for its H / K query heads, no copies): queries are the positions
// past..past+T-1 of keys 0..S-1 (S = past + T), seeing earlier keys and,
// with a window, fewer than `window` back; scores scaled by 1/sqrt(D).
// Inputs may be strided views whose last dimension is contiguous (the
// slices of a fused QKV projection). Returns (B, T, H, D), contiguous.
// Keeps O(T) per head for backward, not the probabilities.
torch::Tensor FusedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             int64_t past, int64_t window);

// Sum over rows of cross-entropy of logits (N, V) against targets (N)
// int64; rows whose target is ignore_index add nothing. A () float tensor.
torch::Tensor FusedCrossEntropySum(const torch::Tensor& logits, const torch::Tensor& targets,
                                   int64_t ignore_index);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_FUSED_OPS_H_
