#include "worker/engine/ops.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cmath>

#include "worker/engine/attention_kernels.h"
#include "worker/engine/cpu_kernels.h"

namespace tuneforge::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Elements (or elements' worth of rows) below which a range is not split
// between threads.
constexpr int64_t kGrain = 1 << 14;

int64_t RowGrain(int64_t row_length) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, row_length));
}

const float* In(const torch::Tensor& t) { return t.data_ptr<float>(); }
float* Out(torch::Tensor& t) { return t.data_ptr<float>(); }

class GeluTanhFunction : public torch::autograd::Function<GeluTanhFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x) {
    x = x.contiguous();
    torch::Tensor y = torch::empty_like(x);
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
      kernels::GeluTanh(In(x) + b, Out(y) + b, e - b);
    });
    ctx->save_for_backward({x});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const torch::Tensor dy = grad[0].contiguous();
    torch::Tensor dx = torch::empty_like(x);
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
      kernels::GeluTanhBackward(In(x) + b, In(dy) + b, Out(dx) + b, e - b);
    });
    return {dx};
  }
};

class SwiGluFunction : public torch::autograd::Function<SwiGluFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor gate, torch::Tensor up) {
    gate = gate.contiguous();
    up = up.contiguous();
    torch::Tensor h = torch::empty_like(gate);
    at::parallel_for(0, gate.numel(), kGrain, [&](int64_t b, int64_t e) {
      kernels::SwiGlu(In(gate) + b, In(up) + b, Out(h) + b, e - b);
    });
    ctx->save_for_backward({gate, up});
    return h;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor& gate = saved[0];
    const torch::Tensor& up = saved[1];
    const torch::Tensor dh = grad[0].contiguous();
    torch::Tensor dgate = torch::empty_like(gate), dup = torch::empty_like(up);
    at::parallel_for(0, gate.numel(), kGrain, [&](int64_t b, int64_t e) {
      kernels::SwiGluBackward(In(gate) + b, In(up) + b, In(dh) + b, Out(dgate) + b, Out(dup) + b,
                              e - b);
    });
    return {dgate, dup};
  }
};

// Rows of the weight gradient summed per block of this many rows, then the
// blocks in order: the same sums whatever the number of threads.
constexpr int64_t kNormBlock = 64;

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor weight,
                               double eps) {
    x = x.contiguous();
    weight = weight.contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / C;
    torch::Tensor y = torch::empty_like(x);
    torch::Tensor rstd = torch::empty({rows}, x.options());
    at::parallel_for(0, rows, RowGrain(C), [&](int64_t b, int64_t e) {
      kernels::RmsNorm(In(x) + b * C, In(weight), float(eps), e - b, C, Out(y) + b * C,
                       Out(rstd) + b);
    });
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &rstd = saved[2];
    const torch::Tensor dy = grad[0].contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / C;
    const int64_t blocks = (rows + kNormBlock - 1) / kNormBlock;
    torch::Tensor dx = torch::empty_like(x);
    torch::Tensor partial = torch::zeros({blocks, C}, x.options());  // dw per block of rows
    at::parallel_for(
        0, blocks, std::max<int64_t>(1, RowGrain(C) / kNormBlock), [&](int64_t b, int64_t e) {
          for (int64_t block = b; block < e; ++block) {
            const int64_t r0 = block * kNormBlock, n = std::min(kNormBlock, rows - r0);
            kernels::RmsNormBackward(In(x) + r0 * C, In(weight), In(rstd) + r0, In(dy) + r0 * C, n,
                                     C, Out(dx) + r0 * C, Out(partial) + block * C);
          }
        });
    torch::Tensor dweight;
    if (ctx->needs_input_grad(1)) {
      dweight = torch::zeros({C}, x.options());
      float* dw = Out(dweight);
      const float* p = In(partial);
      for (int64_t block = 0; block < blocks; ++block) {
        for (int64_t c = 0; c < C; ++c) dw[c] += p[block * C + c];
      }
    }
    return {dx, dweight, torch::Tensor()};
  }
};

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t heads,
                               torch::Tensor cos_half, torch::Tensor sin_half) {
    x = x.contiguous();
    cos_half = cos_half.contiguous();
    sin_half = sin_half.contiguous();
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2) / heads;
    torch::Tensor out = torch::empty({B, T, heads, D}, x.options());
    Rotate(x, cos_half, sin_half, /*inverse=*/false, out);
    ctx->save_for_backward({cos_half, sin_half});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor dy = grad[0].contiguous();  // (B, T, N, D)
    torch::Tensor dx = torch::empty_like(dy);
    Rotate(dy, saved[0], saved[1], /*inverse=*/true, dx);
    return {dx.view({dy.size(0), dy.size(1), -1}), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }

 private:
  // x and out: (B, T, N, D) in memory, whatever their shapes.
  static void Rotate(const torch::Tensor& x, const torch::Tensor& cos_half,
                     const torch::Tensor& sin_half, bool inverse, torch::Tensor& out) {
    const int64_t half = cos_half.size(-1), T = cos_half.size(-2);
    const int64_t rows = x.numel() / (2 * half);
    const kernels::RopeShape shape{T, rows / (x.size(0) * T), 2 * half, cos_half.dim() == 3};
    at::parallel_for(0, rows, RowGrain(2 * half), [&](int64_t b, int64_t e) {
      kernels::Rope(In(x), In(cos_half), In(sin_half), shape, b, e, inverse, Out(out));
    });
  }
};

// Attention a block of queries at a time (attention_kernels.h): saves the
// output and each row's log-sum-exp, not the probabilities.
class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  // spans: as AttentionOptions::spans (an optional, as autograd takes no
  // undefined tensor among a function's inputs).
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor q, torch::Tensor k,
                               torch::Tensor v, int64_t past, int64_t window,
                               const c10::optional<torch::Tensor>& packed) {
    if (q.stride(3) != 1) q = q.contiguous();
    if (k.stride(3) != 1) k = k.contiguous();
    if (v.stride(3) != 1) v = v.contiguous();
    const torch::Tensor spans = packed ? packed->contiguous() : torch::Tensor();
    const kernels::AttentionShape shape = Shape(q, k, v, past, window, spans);
    torch::Tensor o = Output(spans, q, {shape.B, shape.T, shape.H, shape.D});
    torch::Tensor lse = torch::empty({shape.B, shape.H, shape.T}, q.options());
    at::parallel_for(0, kernels::AttentionSequences(shape) * shape.H, 1, [&](int64_t b, int64_t e) {
      kernels::AttentionForward(shape, In(q), In(k), In(v), Out(o), Out(lse), b, e);
    });
    ctx->save_for_backward({q, k, v, o, lse});
    ctx->saved_data["past"] = past;
    ctx->saved_data["window"] = window;
    ctx->saved_data["spans"] = spans;
    return o;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &o = saved[3], &lse = saved[4];
    const torch::Tensor spans = ctx->saved_data["spans"].toTensor();
    const kernels::AttentionShape shape =
        Shape(q, k, v, ctx->saved_data["past"].toInt(), ctx->saved_data["window"].toInt(), spans);
    const torch::Tensor dout = grad[0].contiguous();
    torch::Tensor dq = Output(spans, q, {shape.B, shape.T, shape.H, shape.D});
    torch::Tensor dk = Output(spans, q, {shape.B, shape.S, shape.K, shape.D});
    torch::Tensor dv = Output(spans, q, {shape.B, shape.S, shape.K, shape.D});
    at::parallel_for(0, kernels::AttentionSequences(shape) * shape.K, 1, [&](int64_t b, int64_t e) {
      kernels::AttentionBackward(shape, In(q), In(k), In(v), In(o), In(lse), In(dout), Out(dq),
                                 Out(dk), Out(dv), b, e);
    });
    return {dq, dk, dv, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

 private:
  // An output like `like`; packed rows leave padding untouched, so then it
  // starts as zeros.
  static torch::Tensor Output(const torch::Tensor& spans, const torch::Tensor& like,
                              at::IntArrayRef sizes) {
    return spans.defined() ? torch::zeros(sizes, like.options())
                           : torch::empty(sizes, like.options());
  }
  static kernels::AttentionShape Shape(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, int64_t past, int64_t window,
                                       const torch::Tensor& spans) {
    kernels::AttentionShape s;
    s.B = q.size(0);
    s.T = q.size(1);
    s.H = q.size(2);
    s.D = q.size(3);
    s.S = k.size(1);
    s.K = k.size(2);
    s.past = past;
    s.window = window;
    s.scale = float(1.0 / std::sqrt(double(s.D)));
    s.q_b = q.stride(0), s.q_t = q.stride(1), s.q_h = q.stride(2);
    s.k_b = k.stride(0), s.k_s = k.stride(1), s.k_h = k.stride(2);
    s.v_b = v.stride(0), s.v_s = v.stride(1), s.v_h = v.stride(2);
    if (spans.defined()) {
      s.spans = spans.data_ptr<int64_t>();
      s.n_spans = spans.size(0);
    }
    return s;
  }
};

class CrossEntropyFunction : public torch::autograd::Function<CrossEntropyFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor logits, torch::Tensor targets,
                               int64_t ignore_index) {
    logits = logits.contiguous();
    targets = targets.contiguous();
    const int64_t rows = logits.size(0), V = logits.size(1);
    const int64_t* t = targets.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      TORCH_CHECK(t[r] == ignore_index || (t[r] >= 0 && t[r] < V), "target ", t[r], " of row ", r,
                  " is outside the vocabulary of ", V);
    }
    torch::Tensor lse = torch::empty({rows}, logits.options());
    torch::Tensor loss = torch::empty({rows}, logits.options());
    at::parallel_for(0, rows, RowGrain(V), [&](int64_t b, int64_t e) {
      kernels::CrossEntropy(In(logits), t, ignore_index, V, b, e, Out(lse), Out(loss));
    });
    double total = 0;  // in row order: the same sum whatever the threads
    const float* row_loss = In(loss);
    for (int64_t r = 0; r < rows; ++r) total += row_loss[r];
    ctx->save_for_backward({logits, targets, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    return torch::scalar_tensor(total, logits.options());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &logits = saved[0], &targets = saved[1], &lse = saved[2];
    const int64_t rows = logits.size(0), V = logits.size(1);
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const float scale = grad[0].item<float>();
    torch::Tensor dlogits = torch::empty_like(logits);
    const int64_t* t = targets.data_ptr<int64_t>();
    at::parallel_for(0, rows, RowGrain(V), [&](int64_t b, int64_t e) {
      kernels::CrossEntropyBackward(In(logits), t, ignore_index, In(lse), scale, V, b, e,
                                    Out(dlogits));
    });
    return {dlogits, torch::Tensor(), torch::Tensor()};
  }
};

// True where query position past+i may not see key position j: the future,
// and keys a sliding window or more behind. (T, S) bool.
torch::Tensor BlockedMask(int64_t past, int64_t T, int64_t S, int64_t window,
                          const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  torch::Tensor i = torch::arange(past, past + T, opts).unsqueeze(1);  // (T, 1)
  torch::Tensor j = torch::arange(0, S, opts).unsqueeze(0);            // (1, S)
  torch::Tensor blocked = j > i;                                       // (T, S)
  if (window > 0) blocked = blocked | ((i - j) >= window);
  return blocked;
}

// Causal attention with libtorch's operations, on heads (B, N, T, D).
torch::Tensor ComposedAttention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                const AttentionOptions& o) {
  const int64_t T = q.size(2), S = k.size(2), D = q.size(-1), groups = q.size(1) / k.size(1);
  if (groups > 1) {  // each key/value head repeated for the query heads that share it
    k = k.repeat_interleave(groups, /*dim=*/1);  // (B, H, S, D)
    v = v.repeat_interleave(groups, /*dim=*/1);
  }
  const double p = o.dropout;
#if TORCH_VERSION_MAJOR >= 2
  if (o.past == 0 && (o.window == 0 || S <= o.window)) {  // flash attention on CUDA
    return at::scaled_dot_product_attention(q, k, v, {}, p, /*is_causal=*/true);
  }
#endif
  torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(D));  // (B, H, T, S)
  att = att.to(torch::kFloat32)
            .masked_fill(BlockedMask(o.past, T, S, o.window, q.device()),
                         -std::numeric_limits<float>::infinity());
  att = torch::softmax(att, -1);
  if (p > 0) att = torch::dropout(att, p, /*train=*/true);
  return torch::matmul(att.to(q.scalar_type()), v);
}

// Checks that spans are {row, start, length} triples tiling their rows from
// position 0 in order, within (B, T).
void CheckSpans(const torch::Tensor& spans, int64_t B, int64_t T) {
  TORCH_CHECK(spans.dim() == 2 && spans.size(1) == 3 && spans.scalar_type() == torch::kInt64 &&
                  spans.device().is_cpu(),
              "spans must be (N, 3) int64 on the CPU");
  const torch::Tensor c = spans.contiguous();
  const int64_t* s = c.data_ptr<int64_t>();
  std::vector<int64_t> filled(B, 0);
  for (int64_t i = 0; i < c.size(0); ++i) {
    const int64_t b = s[3 * i], start = s[3 * i + 1], len = s[3 * i + 2];
    TORCH_CHECK(b >= 0 && b < B && start == filled[b] && len > 0 && start + len <= T,
                "packed sequences must tile their row from its start, in order (span ", i, ")");
    filled[b] = start + len;
  }
}

// Attention of packed rows with libtorch's operations: each sequence's own
// attention, padding zeros. q (B, T, H, D), k and v (B, T, K, D).
torch::Tensor ComposedSpanAttention(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, const AttentionOptions& o) {
  const int64_t B = q.size(0), T = q.size(1);
  auto s = o.spans.accessor<int64_t, 2>();
  AttentionOptions one = o;
  one.spans = torch::Tensor();
  std::vector<std::vector<torch::Tensor>> rows(B);
  std::vector<int64_t> filled(B, 0);
  for (int64_t i = 0; i < o.spans.size(0); ++i) {
    const int64_t b = s[i][0], start = s[i][1], len = s[i][2];
    auto part = [&](const torch::Tensor& t) { return t.narrow(0, b, 1).narrow(1, start, len); };
    rows[b].push_back(CausalAttention(part(q), part(k), part(v), one));  // (1, len, H, D)
    filled[b] = start + len;
  }
  std::vector<torch::Tensor> out;
  for (int64_t b = 0; b < B; ++b) {
    if (filled[b] < T) {
      rows[b].push_back(torch::zeros({1, T - filled[b], q.size(2), q.size(3)}, q.options()));
    }
    out.push_back(torch::cat(rows[b], 1));  // (1, T, H, D)
  }
  return torch::cat(out, 0);
}

}  // namespace

bool FusedApplies(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat32;
}

torch::Tensor GeluTanh(const torch::Tensor& x, bool fused) {
  if (fused && FusedApplies(x)) return GeluTanhFunction::apply(x);
  return torch::gelu(x, "tanh");
}

torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up, bool fused) {
  TORCH_CHECK(gate.sizes() == up.sizes(), "SwiGLU needs gate and up of one shape");
  if (fused && FusedApplies(gate) && FusedApplies(up)) return SwiGluFunction::apply(gate, up);
  return torch::silu(gate) * up;
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool fused) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "RMSNorm weight must be (C)");
  if (fused && FusedApplies(x) && FusedApplies(weight))
    return RmsNormFunction::apply(x, weight, eps);
  torch::Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);  // (..., C)
  return weight * h.to(x.scalar_type());
}

torch::Tensor RotaryEmbedding(const torch::Tensor& x, int64_t heads, const Rope& rope, bool fused) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) % (2 * heads) == 0,
              "rotary input must be (B, T, N * D) with D even");
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2) / heads;
  TORCH_CHECK(rope.cos.size(-1) == D && rope.cos.size(-2) == T &&
                  (rope.cos.dim() == 2 || (rope.cos.dim() == 3 && rope.cos.size(0) == B)),
              "rotary angles must be (T, D) or (B, T, D)");
  if (fused && FusedApplies(x) && rope.cos_half.defined()) {
    return RopeFunction::apply(x, heads, rope.cos_half, rope.sin_half);
  }
  torch::Tensor h = x.view({B, T, heads, D});
  torch::Tensor rotated = torch::cat({-h.narrow(-1, D / 2, D / 2), h.narrow(-1, 0, D / 2)}, -1);
  // (T, 1, D) or (B, T, 1, D): the same angles for every head.
  return h * rope.cos.unsqueeze(-2) + rotated * rope.sin.unsqueeze(-2);
}

torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const AttentionOptions& o) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(0) == k.size(0) &&
                  q.size(3) == k.size(3) && k.size(2) > 0 && q.size(2) % k.size(2) == 0 &&
                  o.past >= 0 && o.past + q.size(1) == k.size(1),
              "attention needs q (B, T, H, D) and k, v (B, past + T, K, D) with K dividing H");
  if (o.spans.defined()) {
    TORCH_CHECK(o.past == 0, "packed rows are not attended after a cache");
    CheckSpans(o.spans, q.size(0), q.size(1));
  }
  if (o.fused && o.dropout == 0 && o.matmul_dtype == torch::kFloat32 && FusedApplies(q) &&
      FusedApplies(k) && FusedApplies(v)) {
    const c10::optional<torch::Tensor> spans =
        o.spans.defined() ? c10::optional<torch::Tensor>(o.spans) : c10::nullopt;
    return AttentionFunction::apply(q, k, v, o.past, o.window, spans);
  }
  if (o.spans.defined()) return ComposedSpanAttention(q, k, v, o);
  const torch::ScalarType dtype = o.matmul_dtype;
  torch::Tensor y = ComposedAttention(q.transpose(1, 2).to(dtype), k.transpose(1, 2).to(dtype),
                                      v.transpose(1, 2).to(dtype), o);  // (B, H, T, D)
  return y.to(q.scalar_type()).transpose(1, 2).contiguous();
}

torch::Tensor CrossEntropySum(const torch::Tensor& logits, const torch::Tensor& targets,
                              int64_t ignore_index, bool fused) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) &&
                  targets.scalar_type() == torch::kInt64,
              "cross-entropy needs logits (N, V) and int64 targets (N)");
  if (fused && FusedApplies(logits) && targets.device().is_cpu()) {
    return CrossEntropyFunction::apply(logits, targets, ignore_index);
  }
  namespace F = torch::nn::functional;
  return F::cross_entropy(
      logits, targets,
      F::CrossEntropyFuncOptions().ignore_index(ignore_index).reduction(torch::kSum));
}

}  // namespace tuneforge::engine
