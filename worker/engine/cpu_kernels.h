// Fused CPU kernels of the training step, on float32 arrays: what the
// Python loop does as a chain of tensor operations (each a pass over
// memory, with a temporary between), done here in one pass each way.
//
//   GELU (tanh form)   y = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
//                      (= 0.5 x (1 + tanh u), GPT-2's activation)
//   SwiGLU             h = silu(g) * u                     (Llama's MLP)
//   RMSNorm            y = w * x / sqrt(mean(x^2) + eps)   (per row of C)
//   rotary embedding   HF's half rotation of each head, (B, T, N, D)
//   cross-entropy      log-sum-exp per row, and its gradient
//   AdamW              the whole update in one pass per parameter
//
// No libtorch here (ops.h wraps these as autograd functions, on
// ranges it splits between threads). Each function works on the range it
// is given and writes only there; results depend only on the inputs, never
// on how a caller splits the work, so runs stay deterministic. Loops are
// written for the compiler to vectorise; on x86-64 each is built for
// AVX-512, AVX2 and the baseline, picked when the program loads, with the
// same arithmetic in each (no fused multiply-add), so every build computes
// the same bits.
//
// exp() here is Cephes' single-precision polynomial (about 1 ulp, simd.h),
// so the activations match libtorch's to about 1e-7. Attention has kernels
// of its own (attention_kernels.h).
#ifndef TUNEFORGE_WORKER_ENGINE_CPU_KERNELS_H_
#define TUNEFORGE_WORKER_ENGINE_CPU_KERNELS_H_

#include <cstdint>

namespace tuneforge::engine::kernels {

// Elementwise over n values.
void GeluTanh(const float* x, float* y, int64_t n);
void GeluTanhBackward(const float* x, const float* dy, float* dx, int64_t n);
void SwiGlu(const float* g, const float* u, float* h, int64_t n);
void SwiGluBackward(const float* g, const float* u, const float* dh, float* dg, float* du,
                    int64_t n);

// RMSNorm of `rows` rows of C values: y = w * x * rstd, rstd per row saved
// for the backward pass.
void RmsNorm(const float* x, const float* w, float eps, int64_t rows, int64_t C, float* y,
             float* rstd);
// dx for the rows, and their contribution to dw added into dw_partial (C).
void RmsNormBackward(const float* x, const float* w, const float* rstd, const float* dy,
                     int64_t rows, int64_t C, float* dx, float* dw_partial);

// Rotary embedding of rows [r0, r1) of x (B, T, N, D), row r = (b T + t) N
// + n, into out of the same shape. cos and sin hold the first half of each
// position's angles, (T, D/2), or per batch row, (B, T, D/2), when
// `per_row` (packed rows restart positions). `inverse` rotates back: the
// backward pass.
struct RopeShape {
  int64_t T, N, D;
  bool per_row = false;
};
void Rope(const float* x, const float* cos, const float* sin, const RopeShape& s, int64_t r0,
          int64_t r1, bool inverse, float* out);

// Cross-entropy of rows [r0, r1) of V logits against targets (ignore_index
// rows carry none): loss[r] = lse[r] - logits[r][target], 0 when ignored.
void CrossEntropy(const float* logits, const int64_t* targets, int64_t ignore_index, int64_t V,
                  int64_t r0, int64_t r1, float* lse, float* loss);
// d logits = scale * (softmax - onehot), 0 for ignored rows.
void CrossEntropyBackward(const float* logits, const int64_t* targets, int64_t ignore_index,
                          const float* lse, float scale, int64_t V, int64_t r0, int64_t r1,
                          float* dlogits);

// Sum of squares of n values, accumulated in double in a fixed order.
double SumOfSquares(const float* x, int64_t n);

// One AdamW step over n values of a parameter (see adamw.h), with the
// gradient multiplied by grad_scale first (gradient clipping).
struct AdamWStep {
  float decay;  // 1 - lr * weight_decay
  float beta1, beta2;
  float step_size;   // lr / (1 - beta1^t)
  float bias2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
  float grad_scale;
};
void AdamW(const AdamWStep& s, const float* grad, float* param, float* exp_avg, float* exp_avg_sq,
           int64_t n);

}  // namespace tuneforge::engine::kernels

#endif  // TUNEFORGE_WORKER_ENGINE_CPU_KERNELS_H_
