#include "worker/engine/attention_kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "worker/engine/simd.h"

namespace tuneforge::engine::kernels {
namespace {

// Key counts and head sizes are padded to multiples of this in the
// per-thread buffers, so the products never need a partial block.
constexpr int64_t kPad = 32;
constexpr int64_t kQueryBlock = 64;  // query rows per block

int64_t Padded(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

typedef float Vec16 __attribute__((vector_size(16 * sizeof(float))));
typedef float Vec4 __attribute__((vector_size(4 * sizeof(float))));

// This thread's buffers, grown as needed and kept between calls.
float* Buffer(int which, int64_t floats) {
  thread_local std::vector<float> buffers[8];
  std::vector<float>& b = buffers[which];
  if (static_cast<int64_t>(b.size()) < floats) b.resize(floats);
  return b.data();
}

// Attention with products on blocks of 4 rows by NV vectors of type Vec:
// 4 x 32 on AVX-512, 4 x 16 on AVX2, 4 x 8 otherwise (the accumulators
// must fit the vector registers).
template <typename Vec, int NV>
struct Attention {
  static constexpr int W = sizeof(Vec) / sizeof(float);
  static constexpr int kCols = W * NV;  // columns of one block; divides kPad
  static_assert(kPad % kCols == 0, "blocks must tile the padding");

  // C[0..MR)[0..kCols) (+)= sum over p < k of A(i, p) * B[p][..], with
  // A(i, p) = A[i * ars + p * acs].
  template <int MR>
  static TF_INLINE void Block(int64_t k, const float* A, int64_t ars, int64_t acs, const float* B,
                              int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    Vec c[MR][NV];
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) {
        c[i][v] = Vec{};
        if (accumulate) std::memcpy(&c[i][v], C + i * ldc + v * W, sizeof(Vec));
      }
    }
    for (int64_t p = 0; p < k; ++p) {
      Vec b[NV];
      for (int v = 0; v < NV; ++v) std::memcpy(&b[v], B + p * ldb + v * W, sizeof(Vec));
      for (int i = 0; i < MR; ++i) {
        // x - 0 is x for every x (0 + x is not, for x = -0), so this folds
        // to a plain broadcast.
        const Vec a = A[i * ars + p * acs] - Vec{};
        for (int v = 0; v < NV; ++v) c[i][v] += a * b[v];
      }
    }
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) std::memcpy(C + i * ldc + v * W, &c[i][v], sizeof(Vec));
    }
  }

  // C (m x n) (+)= A (m x k) B (k x n); n a multiple of kPad.
  static TF_INLINE void Gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t ars,
                             int64_t acs, const float* B, int64_t ldb, float* C, int64_t ldc,
                             bool accumulate) {
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
      for (int64_t j = 0; j < n; j += kCols) {
        Block<4>(k, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, accumulate);
      }
    }
    for (; i < m; ++i) {
      for (int64_t j = 0; j < n; j += kCols) {
        Block<1>(k, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, accumulate);
      }
    }
  }

  // rows x D values (row stride `stride`) into a buffer of rows x Dp, zeros
  // beyond D.
  static TF_INLINE void CopyPadded(const float* src, int64_t stride, int64_t rows, int64_t D,
                                   int64_t Dp, float* dst) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * Dp, src + r * stride, D * sizeof(float));
      std::fill(dst + r * Dp + D, dst + (r + 1) * Dp, 0.0f);
    }
  }

  // The transpose of S rows of D values (row stride `stride`): D x Sp,
  // zeros beyond S. In tiles of 16 rows, so that each source line read is
  // used for all its values.
  static TF_INLINE void Transpose(const float* src, int64_t stride, int64_t S, int64_t D,
                                  int64_t Sp, float* dst) {
    constexpr int64_t kTile = 16;
    for (int64_t s0 = 0; s0 < S; s0 += kTile) {
      const int64_t s1 = std::min(S, s0 + kTile);
      for (int64_t d = 0; d < D; ++d) {
        for (int64_t s = s0; s < s1; ++s) dst[d * Sp + s] = src[s * stride + d];
      }
    }
    for (int64_t d = 0; d < D; ++d) std::fill(dst + d * Sp + S, dst + (d + 1) * Sp, 0.0f);
  }

  // One sequence: T queries from row `start` of batch row b, at positions
  // past..past+T-1 of its S keys (from row `start` too).
  struct Sequence {
    int64_t b, start, T, S, past;
  };
  static TF_INLINE Sequence SequenceOf(const AttentionShape& s, int64_t i) {
    if (!s.spans) return Sequence{i, 0, s.T, s.S, s.past};
    const int64_t* span = s.spans + 3 * i;
    return Sequence{span[0], span[1], span[2], span[2], 0};
  }

  // The keys a block of queries needs: from `lo` (rounded down to a
  // multiple of kPad, so the products stay aligned to the padding) to `hi`.
  struct Keys {
    int64_t lo, hi, n, np;  // n = hi - lo, np = n padded
  };
  static TF_INLINE Keys BlockKeys(const Sequence& q, int64_t window, int64_t i0, int64_t rows) {
    const int64_t first = q.past + i0;
    int64_t lo = window > 0 ? std::max<int64_t>(0, first - window + 1) : 0;
    lo = lo / kPad * kPad;
    const int64_t hi = std::min(q.S, first + rows);
    return Keys{lo, hi, hi - lo, Padded(hi - lo)};
  }
  // The keys [a, e) of a block's key range that query i sees.
  static TF_INLINE void RowKeys(const Sequence& q, int64_t window, const Keys& keys, int64_t i,
                                int64_t* a, int64_t* e) {
    const int64_t pos = q.past + i;
    *a = (window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0) - keys.lo;
    *e = std::min(q.S, pos + 1) - keys.lo;
  }

  static TF_INLINE void Forward(const AttentionShape& s, const float* q, const float* k,
                                const float* v, float* o, float* lse, int64_t u0, int64_t u1) {
    const int64_t Dp = Padded(s.D), G = s.H / s.K;
    for (int64_t u = u0; u < u1; ++u) {
      const Sequence seq = SequenceOf(s, u / s.H);
      const int64_t b = seq.b, h = u % s.H, kv = h / G, Sp = Padded(seq.S);
      float* kt = Buffer(0, s.D * Sp);              // keys transposed, D x Sp
      float* vp = Buffer(1, seq.S * Dp);            // values, S x Dp
      float* scores = Buffer(2, kQueryBlock * Sp);  // a block's scores, then probabilities
      float* out = Buffer(3, kQueryBlock * Dp);
      Transpose(k + b * s.k_b + seq.start * s.k_s + kv * s.k_h, s.k_s, seq.S, s.D, Sp, kt);
      CopyPadded(v + b * s.v_b + seq.start * s.v_s + kv * s.v_h, s.v_s, seq.S, s.D, Dp, vp);
      for (int64_t i0 = 0; i0 < seq.T; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, seq.T - i0);
        const int64_t t0 = seq.start + i0;  // the block's first row in q and o
        const Keys keys = BlockKeys(seq, s.window, i0, rows);
        const float* qb = q + b * s.q_b + t0 * s.q_t + h * s.q_h;
        Gemm(rows, keys.np, s.D, qb, s.q_t, 1, kt + keys.lo, Sp, scores, Sp, false);
        for (int64_t r = 0; r < rows; ++r) {
          float* row = scores + r * Sp;
          int64_t a, e;
          RowKeys(seq, s.window, keys, i0 + r, &a, &e);
          for (int64_t j = a; j < e; ++j) row[j] *= s.scale;
          const float m = Max(row + a, e - a, -INFINITY);
          const float sum = ExpShifted(row + a, m, e - a, row + a);
          const float inv = 1.0f / sum;
          std::fill(row, row + a, 0.0f);
          for (int64_t j = a; j < e; ++j) row[j] *= inv;
          std::fill(row + e, row + keys.n, 0.0f);
          lse[(b * s.H + h) * s.T + t0 + r] = m + std::log(sum);
        }
        Gemm(rows, Dp, keys.n, scores, Sp, 1, vp + keys.lo * Dp, Dp, out, Dp, false);
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(o + ((b * s.T + t0 + r) * s.H + h) * s.D, out + r * Dp, s.D * sizeof(float));
        }
      }
    }
  }

  static TF_INLINE void Backward(const AttentionShape& s, const float* q, const float* k,
                                 const float* v, const float* o, const float* lse,
                                 const float* dout, float* dq, float* dk, float* dv, int64_t u0,
                                 int64_t u1) {
    const int64_t Dp = Padded(s.D), G = s.H / s.K;
    float* rowsbuf = Buffer(7, 3 * kQueryBlock * Dp);  // a block's queries, dout and dq
    float* qb = rowsbuf;
    float* dob = rowsbuf + kQueryBlock * Dp;
    float* dqb = rowsbuf + 2 * kQueryBlock * Dp;
    for (int64_t u = u0; u < u1; ++u) {
      const Sequence seq = SequenceOf(s, u / s.K);
      const int64_t b = seq.b, kv = u % s.K, Sp = Padded(seq.S);
      float* kt = Buffer(0, s.D * Sp);     // keys transposed, D x Sp
      float* vt = Buffer(1, s.D * Sp);     // values transposed
      float* kp = Buffer(2, seq.S * Dp);   // keys, S x Dp
      float* dka = Buffer(3, seq.S * Dp);  // key and value gradients, summed over query heads
      float* dva = Buffer(4, seq.S * Dp);
      float* probs = Buffer(5, kQueryBlock * Sp);
      float* dscores = Buffer(6, kQueryBlock * Sp);
      const float* kb = k + b * s.k_b + seq.start * s.k_s + kv * s.k_h;
      Transpose(kb, s.k_s, seq.S, s.D, Sp, kt);
      Transpose(v + b * s.v_b + seq.start * s.v_s + kv * s.v_h, s.v_s, seq.S, s.D, Sp, vt);
      CopyPadded(kb, s.k_s, seq.S, s.D, Dp, kp);
      std::fill(dka, dka + seq.S * Dp, 0.0f);
      std::fill(dva, dva + seq.S * Dp, 0.0f);
      for (int64_t h = kv * G; h < (kv + 1) * G; ++h) {
        for (int64_t i0 = 0; i0 < seq.T; i0 += kQueryBlock) {
          const int64_t rows = std::min(kQueryBlock, seq.T - i0);
          const int64_t t0 = seq.start + i0;  // the block's first row in q, o, dout and dq
          const Keys keys = BlockKeys(seq, s.window, i0, rows);
          const int64_t row0 = (b * s.T + t0) * s.H + h;  // of o, dout, dq: stride H * D
          CopyPadded(q + b * s.q_b + t0 * s.q_t + h * s.q_h, s.q_t, rows, s.D, Dp, qb);
          CopyPadded(dout + row0 * s.D, s.H * s.D, rows, s.D, Dp, dob);
          // Probabilities again, from the scores and the saved log-sum-exp.
          Gemm(rows, keys.np, s.D, qb, Dp, 1, kt + keys.lo, Sp, probs, Sp, false);
          Gemm(rows, keys.np, s.D, dob, Dp, 1, vt + keys.lo, Sp, dscores, Sp, false);  // dP
          for (int64_t r = 0; r < rows; ++r) {
            float* p = probs + r * Sp;
            float* ds = dscores + r * Sp;
            int64_t a, e;
            RowKeys(seq, s.window, keys, i0 + r, &a, &e);
            const float row_lse = lse[(b * s.H + h) * s.T + t0 + r];
            std::fill(p, p + a, 0.0f);
            for (int64_t j = a; j < e; ++j) p[j] = Exp(p[j] * s.scale - row_lse);
            std::fill(p + e, p + keys.np, 0.0f);
            // dS = P (dP - sum(dout * o)) * scale; zero where P is.
            const float delta = Dot(dob + r * Dp, o + (row0 + r * s.H) * s.D, s.D);
            for (int64_t j = 0; j < keys.np; ++j) ds[j] = p[j] * (ds[j] - delta) * s.scale;
          }
          // dV += P^T dout, dK += dS^T q, dq = dS K.
          Gemm(keys.n, Dp, rows, probs, 1, Sp, dob, Dp, dva + keys.lo * Dp, Dp, true);
          Gemm(keys.n, Dp, rows, dscores, 1, Sp, qb, Dp, dka + keys.lo * Dp, Dp, true);
          Gemm(rows, Dp, keys.n, dscores, Sp, 1, kp + keys.lo * Dp, Dp, dqb, Dp, false);
          for (int64_t r = 0; r < rows; ++r) {
            std::memcpy(dq + (row0 + r * s.H) * s.D, dqb + r * Dp, s.D * sizeof(float));
          }
        }
      }
      for (int64_t j = 0; j < seq.S; ++j) {
        const int64_t row = (b * s.S + seq.start + j) * s.K + kv;
        std::memcpy(dk + row * s.D, dka + j * Dp, s.D * sizeof(float));
        std::memcpy(dv + row * s.D, dva + j * Dp, s.D * sizeof(float));
      }
    }
  }
};

// One version per instruction set, each compiled for it; picked once.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TF_X86_VERSIONS 1
__attribute__((target("arch=x86-64-v4"))) void ForwardAvx512(const AttentionShape& s,
                                                             const float* q, const float* k,
                                                             const float* v, float* o, float* lse,
                                                             int64_t u0, int64_t u1) {
  Attention<Vec16, 2>::Forward(s, q, k, v, o, lse, u0, u1);
}
__attribute__((target("arch=x86-64-v3"))) void ForwardAvx2(const AttentionShape& s, const float* q,
                                                           const float* k, const float* v, float* o,
                                                           float* lse, int64_t u0, int64_t u1) {
  Attention<Vec8, 2>::Forward(s, q, k, v, o, lse, u0, u1);
}
__attribute__((target("arch=x86-64-v4"))) void BackwardAvx512(
    const AttentionShape& s, const float* q, const float* k, const float* v, const float* o,
    const float* lse, const float* dout, float* dq, float* dk, float* dv, int64_t u0, int64_t u1) {
  Attention<Vec16, 2>::Backward(s, q, k, v, o, lse, dout, dq, dk, dv, u0, u1);
}
__attribute__((target("arch=x86-64-v3"))) void BackwardAvx2(const AttentionShape& s, const float* q,
                                                            const float* k, const float* v,
                                                            const float* o, const float* lse,
                                                            const float* dout, float* dq, float* dk,
                                                            float* dv, int64_t u0, int64_t u1) {
  Attention<Vec8, 2>::Backward(s, q, k, v, o, lse, dout, dq, dk, dv, u0, u1);
}

#endif

// The best version this CPU runs.
AttentionIsa DetectIsa() {
#ifdef TF_X86_VERSIONS
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  if (v4) return AttentionIsa::kAvx512;
  if (v3) return AttentionIsa::kAvx2;
#endif
  return AttentionIsa::kBaseline;
}

const AttentionIsa kBestIsa = DetectIsa();
std::atomic<AttentionIsa> isa_in_use{kBestIsa};

}  // namespace

std::vector<AttentionIsa> SupportedAttentionIsas() {
  std::vector<AttentionIsa> out{AttentionIsa::kBaseline};
  if (kBestIsa != AttentionIsa::kBaseline) out.push_back(AttentionIsa::kAvx2);
  if (kBestIsa == AttentionIsa::kAvx512) out.push_back(AttentionIsa::kAvx512);
  return out;
}

AttentionIsa UseAttentionIsa(AttentionIsa isa) { return isa_in_use.exchange(isa); }

void AttentionForward(const AttentionShape& s, const float* q, const float* k, const float* v,
                      float* o, float* lse, int64_t u0, int64_t u1) {
#ifdef TF_X86_VERSIONS
  const AttentionIsa isa = isa_in_use.load(std::memory_order_relaxed);
  if (isa == AttentionIsa::kAvx512) return ForwardAvx512(s, q, k, v, o, lse, u0, u1);
  if (isa == AttentionIsa::kAvx2) return ForwardAvx2(s, q, k, v, o, lse, u0, u1);
#endif
  Attention<Vec4, 2>::Forward(s, q, k, v, o, lse, u0, u1);
}

void AttentionBackward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       const float* o, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv, int64_t u0, int64_t u1) {
#ifdef TF_X86_VERSIONS
  const AttentionIsa isa = isa_in_use.load(std::memory_order_relaxed);
  if (isa == AttentionIsa::kAvx512) {
    return BackwardAvx512(s, q, k, v, o, lse, dout, dq, dk, dv, u0, u1);
  }
  if (isa == AttentionIsa::kAvx2) return BackwardAvx2(s, q, k, v, o, lse, dout, dq, dk, dv, u0, u1);
#endif
  Attention<Vec4, 2>::Backward(s, q, k, v, o, lse, dout, dq, dk, dv, u0, u1);
}

}  // namespace tuneforge::engine::kernels
