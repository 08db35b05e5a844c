// Helpers of the engine's CPU kernels (cpu_kernels.cc, attention_kernels.cc):
// scalar code written for GCC to vectorise, inlined into each kernel so that
// every instruction-set version of a kernel gets its own copy.
//
//   float y = Exp(x);                 // e^x, Cephes' polynomial
//   float m = Max(row, n, -INFINITY); // vectorised maximum
//
// Internal to the engine; no libtorch.
#ifndef TUNEFORGE_WORKER_ENGINE_SIMD_H_
#define TUNEFORGE_WORKER_ENGINE_SIMD_H_

#include <cstdint>
#include <cstring>

#define TF_INLINE inline __attribute__((always_inline))

namespace tuneforge::engine::kernels {

// e^x, Cephes' expf (about 1 ulp): x = n ln2 + r with |r| <= ln2 / 2, a
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

// Independent partial sums, so that loops over them vectorise without
// reordering any one sum: the result depends on n alone, not on the
// instruction set.
constexpr int kLanes = 16;

// Sum of x[i] * y[i] over [0, n).
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

}  // namespace tuneforge::engine::kernels

#endif  // TUNEFORGE_WORKER_ENGINE_SIMD_H_
