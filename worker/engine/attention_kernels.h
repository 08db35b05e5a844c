// Causal attention on the CPU in float32, computed a block of queries at a
// time (as flash attention does on GPUs): the scores of a block exist only
// in a per-thread buffer, the forward pass keeps just each row's log-sum-exp,
// and the backward pass recomputes the probabilities from it. So memory is
// O(T) per head instead of the O(T * S) probabilities a composed attention
// stores, and blocks of keys no query of a block may see (the future, or
// beyond a sliding window) are never multiplied.
//
// Each unit of work (a head in the forward pass; a key/value head with the
// query heads that share it in the backward pass) is done by one thread,
// in a fixed order, so results do not depend on how units are split between
// threads. The products run on a register-blocked kernel built for AVX-512,
// AVX2 or the baseline, picked once from the CPU's features.
//
//   AttentionShape s = ...;  // sizes and strides
//   AttentionForward(s, q, k, v, o, lse, 0, s.B * s.H);
//   AttentionBackward(s, q, k, v, o, lse, dout, dq, dk, dv, 0, s.B * s.K);
//
// No libtorch here; ops.h wraps these as an autograd function.
#ifndef TUNEFORGE_WORKER_ENGINE_ATTENTION_KERNELS_H_
#define TUNEFORGE_WORKER_ENGINE_ATTENTION_KERNELS_H_

#include <cstdint>
#include <vector>

namespace tuneforge::engine::kernels {

// One attention: queries q (B, T, H, D) are the positions past..past+T-1 of
// keys and values k, v (B, S, K, D), S = past + T; query head h uses key
// head h / (H / K). A query sees the keys at or before its position and,
// with a window, fewer than `window` back. Strides are in floats; the last
// dimension of q, k and v is contiguous. o, dout and dq are (B, T, H, D)
// contiguous, dk and dv (B, S, K, D) contiguous, lse (B, H, T).
//
// Packed rows: `spans` holds n_spans {row, start, length} triples (past 0,
// S = T), each a sequence of its own that attends only within itself;
// the sequences of a row must not overlap, and nothing is written outside
// them. Without spans every row is one sequence.
struct AttentionShape {
  int64_t B, T, S, H, K, D;
  int64_t past, window;  // window 0: none
  float scale;           // of the scores, 1 / sqrt(D)
  int64_t q_b, q_t, q_h;
  int64_t k_b, k_s, k_h;
  int64_t v_b, v_s, v_h;
  const int64_t* spans = nullptr;
  int64_t n_spans = 0;
};

// The sequences: the spans, or the B rows.
inline int64_t AttentionSequences(const AttentionShape& s) { return s.spans ? s.n_spans : s.B; }

// o and lse of units [u0, u1) of sequences x H, unit = sequence * H + h.
void AttentionForward(const AttentionShape& s, const float* q, const float* k, const float* v,
                      float* o, float* lse, int64_t u0, int64_t u1);

// dq, dk and dv of units [u0, u1) of sequences x K, unit = sequence * K +
// key head.
void AttentionBackward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       const float* o, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv, int64_t u0, int64_t u1);

// The kernel's versions. The best one the CPU runs is used; tests and
// benchmarks may pick another of SupportedAttentionIsas() (the previous is
// returned). Process-wide: not while attention runs on another thread.
enum class AttentionIsa { kBaseline, kAvx2, kAvx512 };
std::vector<AttentionIsa> SupportedAttentionIsas();
AttentionIsa UseAttentionIsa(AttentionIsa isa);

}  // namespace tuneforge::engine::kernels

#endif  // TUNEFORGE_WORKER_ENGINE_ATTENTION_KERNELS_H_
