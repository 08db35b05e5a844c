#include "worker/engine/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

// Each kernel is compiled for AVX-512, AVX2 and the x86-64 baseline, chosen
// at load time (GCC function multi-versioning). Not under the sanitizers,
// whose runtimes start after the resolvers would run.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define TF_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TF_KERNEL
#endif
#define TF_INLINE inline __attribute__((always_inline))

namespace tuneforge::engine::kernels {
namespace {

// Independent partial sums, so that loops over them vectorise without
// reordering any one sum.
constexpr int kLanes = 16;

// e^x, Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a degree-7
// polynomial for e^r, 2^n from the exponent bits. Clamped to the normal
// range of float; NaN stays NaN.
TF_INLINE float Exp(float x) {
  x = x < -87.33f ? -87.33f : x;
  x = x > 88.37f ? 88.37f : x;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + kMagic;
  const float n = t - kMagic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &t, sizeof(bits));
  const int32_t exponent = (bits - 0x4B400000 + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  return p * scale;
}

TF_INLINE float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

// Sum of x[i] * y[i] over [0, n), in kLanes partial sums.
TF_INLINE float Dot(const float* x, const float* y, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += x[i + k] * y[i + k];
  }
  float sum = 0;
  for (int k = 0; k < kLanes; ++k) sum += acc[k];
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

// The largest of x[0..n) and init. Written with a vector type (8 lanes,
// which AVX2 holds natively): GCC does not turn a scalar max into a vector
// one, as its NaN rules depend on the order.
typedef float Vec8 __attribute__((vector_size(8 * sizeof(float))));
TF_INLINE float Max(const float* x, int64_t n, float init) {
  Vec8 a = Vec8{} + init, b = a;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Vec8 u, v;
    std::memcpy(&u, x + i, sizeof(u));
    std::memcpy(&v, x + i + 8, sizeof(v));
    a = u > a ? u : a;
    b = v > b ? v : b;
  }
  float m = init;
  for (int k = 0; k < 8; ++k) {
    m = a[k] > m ? a[k] : m;
    m = b[k] > m ? b[k] : m;
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// y[i] = e^(x[i] - shift); returns their sum. y may be x.
TF_INLINE float ExpShifted(const float* x, float shift, int64_t n, float* y) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      y[i + k] = Exp(x[i + k] - shift);
      acc[k] += y[i + k];
    }
  }
  float sum = 0;
  for (int k = 0; k < kLanes; ++k) sum += acc[k];
  for (; i < n; ++i) {
    y[i] = Exp(x[i] - shift);
    sum += y[i];
  }
  return sum;
}

// The keys [lo, hi) that row r of an attention may see.
TF_INLINE void VisibleKeys(const CausalShape& s, int64_t r, int64_t* lo, int64_t* hi) {
  const int64_t q = s.past + r % s.T;
  *hi = std::min(s.S, q + 1);
  *lo = s.window > 0 ? std::max<int64_t>(0, q - s.window + 1) : 0;
}

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
                    const float* __restrict sin, const RopeShape& s, int64_t b, int64_t h0,
                    int64_t h1, float* __restrict out) {
  const int64_t half = s.D / 2;
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t t = 0; t < s.T; ++t) {
      const float* src = x + ((b * s.T + t) * s.N + h) * s.D;
      float* dst = out + ((b * s.N + h) * s.T + t) * s.D;
      const int64_t angle = (s.per_row ? b * s.T + t : t) * half;
      const float* c = cos + angle;
      const float* sn = sin + angle;
      for (int64_t d = 0; d < half; ++d) {
        dst[d] = src[d] * c[d] - src[d + half] * sn[d];
        dst[d + half] = src[d + half] * c[d] + src[d] * sn[d];
      }
    }
  }
}

TF_KERNEL void RopeInverse(const float* __restrict dy, const float* __restrict cos,
                           const float* __restrict sin, const RopeShape& s, int64_t b, int64_t h0,
                           int64_t h1, float* __restrict dx) {
  const int64_t half = s.D / 2;
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t t = 0; t < s.T; ++t) {
      const float* src = dy + ((b * s.N + h) * s.T + t) * s.D;
      float* dst = dx + ((b * s.T + t) * s.N + h) * s.D;
      const int64_t angle = (s.per_row ? b * s.T + t : t) * half;
      const float* c = cos + angle;
      const float* sn = sin + angle;
      for (int64_t d = 0; d < half; ++d) {
        dst[d] = src[d] * c[d] + src[d + half] * sn[d];
        dst[d + half] = src[d + half] * c[d] - src[d] * sn[d];
      }
    }
  }
}

TF_KERNEL void CausalSoftmax(float* scores, const CausalShape& s, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = scores + r * s.S;
    int64_t lo, hi;
    VisibleKeys(s, r, &lo, &hi);
    for (int64_t j = lo; j < hi; ++j) row[j] *= s.scale;
    const float m = Max(row + lo, hi - lo, -INFINITY);
    const float inv = 1.0f / ExpShifted(row + lo, m, hi - lo, row + lo);
    for (int64_t j = 0; j < lo; ++j) row[j] = 0;
    for (int64_t j = lo; j < hi; ++j) row[j] *= inv;
    for (int64_t j = hi; j < s.S; ++j) row[j] = 0;
  }
}

TF_KERNEL void CausalSoftmaxBackward(const float* __restrict probs, const float* __restrict dprobs,
                                     const CausalShape& s, int64_t r0, int64_t r1,
                                     float* __restrict dscores) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = probs + r * s.S;
    const float* dp = dprobs + r * s.S;
    float* ds = dscores + r * s.S;
    int64_t lo, hi;
    VisibleKeys(s, r, &lo, &hi);
    const float dot = Dot(p + lo, dp + lo, hi - lo);
    for (int64_t j = 0; j < lo; ++j) ds[j] = 0;
    for (int64_t j = lo; j < hi; ++j) ds[j] = s.scale * (p[j] * (dp[j] - dot));
    for (int64_t j = hi; j < s.S; ++j) ds[j] = 0;
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
