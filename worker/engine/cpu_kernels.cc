#include "worker/engine/cpu_kernels.h"

#include <algorithm>
#include <cmath>

#include "worker/engine/simd.h"

// Each kernel is compiled for AVX-512, AVX2 and the x86-64 baseline, chosen
// at load time (GCC function multi-versioning). Not under the sanitizers,
// whose runtimes start after the resolvers would run.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define TF_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TF_KERNEL
#endif

namespace tuneforge::engine::kernels {
namespace {

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

}  // namespace

TF_KERNEL void GeluTanh(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kGeluK * (v + kGeluC * (v * v * v));
    y[i] = v * Sigmoid(2.0f * u);
  }
}

TF_KERNEL void GeluTanhBackward(const float* __restrict x, const float* __restrict dy,
                                float* __restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kGeluK * (v + kGeluC * (v * v * v));
    const float s = Sigmoid(2.0f * u);  // 0.5 (1 + tanh u)
    // d/dx [x s(2u)] = s + x * 2 s (1 - s) * du/dx
    const float du = kGeluK * (1.0f + 3.0f * kGeluC * (v * v));
    dx[i] = dy[i] * (s + v * (2.0f * s * (1.0f - s)) * du);
  }
}

TF_KERNEL void SwiGlu(const float* __restrict g, const float* __restrict u, float* __restrict h,
                      int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] * Sigmoid(g[i]) * u[i];
}

TF_KERNEL void SwiGluBackward(const float* __restrict g, const float* __restrict u,
                              const float* __restrict dh, float* __restrict dg,
                              float* __restrict du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = Sigmoid(g[i]);
    const float silu = g[i] * s;
    du[i] = dh[i] * silu;
    dg[i] = dh[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));  // silu'(g)
  }
}

TF_KERNEL void RmsNorm(const float* __restrict x, const float* __restrict w, float eps,
                       int64_t rows, int64_t C, float* __restrict y, float* __restrict rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    const float inv = 1.0f / std::sqrt(Dot(xr, xr, C) / float(C) + eps);
    rstd[r] = inv;
    for (int64_t c = 0; c < C; ++c) yr[c] = w[c] * (xr[c] * inv);
  }
}

TF_KERNEL void RmsNormBackward(const float* __restrict x, const float* __restrict w,
                               const float* __restrict rstd, const float* __restrict dy,
                               int64_t rows, int64_t C, float* __restrict dx,
                               float* __restrict dw_partial) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    const float* gr = dy + r * C;
    float* dr = dx + r * C;
    const float inv = rstd[r];
    // dot = sum(dy * w * x); dx = inv * dy * w - x * inv^3 * dot / C
    float acc[kLanes] = {};
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      for (int k = 0; k < kLanes; ++k) acc[k] += gr[c + k] * w[c + k] * xr[c + k];
    }
    float dot = 0;
    for (int k = 0; k < kLanes; ++k) dot += acc[k];
    for (; c < C; ++c) dot += gr[c] * w[c] * xr[c];
    const float coef = inv * inv * inv * dot / float(C);
    for (c = 0; c < C; ++c) {
      dr[c] = inv * (gr[c] * w[c]) - xr[c] * coef;
      dw_partial[c] += gr[c] * (xr[c] * inv);
    }
  }
}

TF_KERNEL void Rope(const float* __restrict x, const float* __restrict cos,
                    const float* __restrict sin, const RopeShape& s, int64_t r0, int64_t r1,
                    bool inverse, float* __restrict out) {
  const int64_t half = s.D / 2;
  const float sign = inverse ? -1.0f : 1.0f;  // rotating back: the angle negated
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t bt = r / s.N;  // b * T + t
    const float* src = x + r * s.D;
    float* dst = out + r * s.D;
    const int64_t angle = (s.per_row ? bt : bt % s.T) * half;
    const float* c = cos + angle;
    const float* sn = sin + angle;
    for (int64_t d = 0; d < half; ++d) {
      const float sd = sign * sn[d];
      dst[d] = src[d] * c[d] - src[d + half] * sd;
      dst[d + half] = src[d + half] * c[d] + src[d] * sd;
    }
  }
}

TF_KERNEL void CrossEntropy(const float* logits, const int64_t* targets, int64_t ignore_index,
                            int64_t V, int64_t r0, int64_t r1, float* lse, float* loss) {
  float scratch[256];
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = logits + r * V;
    const float m = Max(x, V, -INFINITY);
    float sum = 0;
    for (int64_t j = 0; j < V; j += 256) {  // e^(x - m) into a scratch block, summed
      sum += ExpShifted(x + j, m, std::min<int64_t>(256, V - j), scratch);
    }
    lse[r] = m + std::log(sum);
    const int64_t t = targets[r];
    loss[r] = t == ignore_index ? 0.0f : lse[r] - x[t];
  }
}

TF_KERNEL void CrossEntropyBackward(const float* __restrict logits, const int64_t* targets,
                                    int64_t ignore_index, const float* lse, float scale, int64_t V,
                                    int64_t r0, int64_t r1, float* __restrict dlogits) {
  for (int64_t r = r0; r < r1; ++r) {
    float* d = dlogits + r * V;
    const int64_t t = targets[r];
    if (t == ignore_index) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    const float* x = logits + r * V;
    const float shift = lse[r];
    for (int64_t j = 0; j < V; ++j) d[j] = scale * Exp(x[j] - shift);
    d[t] -= scale;
  }
}

TF_KERNEL double SumOfSquares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;  // float partial sums per block, blocks summed in double
  double total = 0;
  for (int64_t i = 0; i < n; i += kBlock) {
    total += Dot(x + i, x + i, std::min(kBlock, n - i));
  }
  return total;
}

TF_KERNEL void AdamW(const AdamWStep& s, const float* __restrict grad, float* __restrict param,
                     float* __restrict exp_avg, float* __restrict exp_avg_sq, int64_t n) {
  const float b1 = s.beta1, b2 = s.beta2, c1 = 1.0f - s.beta1, c2 = 1.0f - s.beta2;
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * s.grad_scale;
    const float m = b1 * exp_avg[i] + c1 * g;
    const float v = b2 * exp_avg_sq[i] + c2 * (g * g);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float denom = std::sqrt(v) / s.bias2_sqrt + s.eps;
    param[i] = param[i] * s.decay - s.step_size * (m / denom);
  }
}

}  // namespace tuneforge::engine::kernels
