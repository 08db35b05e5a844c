#include "worker/engine/fused_ops.h"

#include <cmath>

#include <ATen/Parallel.h>

#include "worker/engine/cpu_kernels.h"

namespace tuneforge::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Elements (or elements' worth of rows) below which a range is not split
// between threads.
constexpr int64_t kGrain = 1 << 14;

int64_t RowGrain(int64_t row_length) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, row_length)); }

// Runs f(begin, end) over [0, n) split between the intra-op threads.
template <typename F>
void ParallelFor(int64_t n, int64_t grain, const F& f) {
  at::parallel_for(0, n, grain, f);
}

const float* In(const torch::Tensor& t) { return t.data_ptr<float>(); }
float* Out(torch::Tensor& t) { return t.data_ptr<float>(); }

class GeluTanhFunction : public torch::autograd::Function<GeluTanhFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x) {
    x = x.contiguous();
    torch::Tensor y = torch::empty_like(x);
    ParallelFor(x.numel(), kGrain, [&](int64_t b, int64_t e) {
      kernels::GeluTanh(In(x) + b, Out(y) + b, e - b);
    });
    ctx->save_for_backward({x});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const torch::Tensor dy = grad[0].contiguous();
    torch::Tensor dx = torch::empty_like(x);
    ParallelFor(x.numel(), kGrain, [&](int64_t b, int64_t e) {
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
    ParallelFor(gate.numel(), kGrain, [&](int64_t b, int64_t e) {
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
    ParallelFor(gate.numel(), kGrain, [&](int64_t b, int64_t e) {
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
    ParallelFor(rows, RowGrain(C), [&](int64_t b, int64_t e) {
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
    ParallelFor(blocks, std::max<int64_t>(1, RowGrain(C) / kNormBlock), [&](int64_t b, int64_t e) {
      for (int64_t block = b; block < e; ++block) {
        const int64_t r0 = block * kNormBlock, n = std::min(kNormBlock, rows - r0);
        kernels::RmsNormBackward(In(x) + r0 * C, In(weight), In(rstd) + r0, In(dy) + r0 * C, n, C,
                                 Out(dx) + r0 * C, Out(partial) + block * C);
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

kernels::RopeShape RopeShapeOf(int64_t B, int64_t T, int64_t N, int64_t D, const torch::Tensor& cos) {
  return kernels::RopeShape{B, T, N, D, cos.dim() == 3};
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t heads,
                               torch::Tensor cos_half, torch::Tensor sin_half) {
    x = x.contiguous();
    cos_half = cos_half.contiguous();
    sin_half = sin_half.contiguous();
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2) / heads;
    const kernels::RopeShape shape = RopeShapeOf(B, T, heads, D, cos_half);
    torch::Tensor out = torch::empty({B, heads, T, D}, x.options());
    ParallelFor(B * heads, std::max<int64_t>(1, RowGrain(T * D)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        kernels::Rope(In(x), In(cos_half), In(sin_half), shape, i / heads, i % heads,
                      i % heads + 1, Out(out));
      }
    });
    ctx->save_for_backward({cos_half, sin_half});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &cos_half = saved[0], &sin_half = saved[1];
    const torch::Tensor dy = grad[0].contiguous();  // (B, N, T, D)
    const int64_t B = dy.size(0), N = dy.size(1), T = dy.size(2), D = dy.size(3);
    const kernels::RopeShape shape = RopeShapeOf(B, T, N, D, cos_half);
    torch::Tensor dx = torch::empty({B, T, N * D}, dy.options());
    ParallelFor(B * N, std::max<int64_t>(1, RowGrain(T * D)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        kernels::RopeInverse(In(dy), In(cos_half), In(sin_half), shape, i / N, i % N, i % N + 1,
                             Out(dx));
      }
    });
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// Softmax over each row's visible keys, in place on the scores (which the
// products around it do not keep): the probabilities take their memory.
class CausalSoftmaxFunction : public torch::autograd::Function<CausalSoftmaxFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor scores, int64_t T, int64_t past,
                               int64_t window, double scale) {
    TORCH_CHECK(scores.is_contiguous(), "causal softmax works in place on contiguous scores");
    const kernels::CausalShape shape{T, scores.size(-1), past, window, float(scale)};
    ParallelFor(scores.numel() / shape.S, RowGrain(shape.S), [&](int64_t b, int64_t e) {
      kernels::CausalSoftmax(Out(scores), shape, b, e);
    });
    ctx->mark_dirty({scores});
    ctx->save_for_backward({scores});
    ctx->saved_data["T"] = T;
    ctx->saved_data["past"] = past;
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    return scores;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const torch::Tensor probs = ctx->get_saved_variables()[0];
    const torch::Tensor dprobs = grad[0].contiguous();
    const kernels::CausalShape shape{ctx->saved_data["T"].toInt(), probs.size(-1),
                                     ctx->saved_data["past"].toInt(),
                                     ctx->saved_data["window"].toInt(),
                                     float(ctx->saved_data["scale"].toDouble())};
    torch::Tensor dscores = torch::empty_like(probs);
    ParallelFor(probs.numel() / shape.S, RowGrain(shape.S), [&](int64_t b, int64_t e) {
      kernels::CausalSoftmaxBackward(In(probs), In(dprobs), shape, b, e, Out(dscores));
    });
    return {dscores, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
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
    ParallelFor(rows, RowGrain(V), [&](int64_t b, int64_t e) {
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
    ParallelFor(rows, RowGrain(V), [&](int64_t b, int64_t e) {
      kernels::CrossEntropyBackward(In(logits), t, ignore_index, In(lse), scale, V, b, e,
                                    Out(dlogits));
    });
    return {dlogits, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool FusedApplies(const torch::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat32;
}

torch::Tensor FusedGeluTanh(const torch::Tensor& x) { return GeluTanhFunction::apply(x); }

torch::Tensor FusedSwiGlu(const torch::Tensor& gate, const torch::Tensor& up) {
  TORCH_CHECK(gate.sizes() == up.sizes(), "SwiGLU needs gate and up of one shape");
  return SwiGluFunction::apply(gate, up);
}

torch::Tensor FusedRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "RMSNorm weight must be (C)");
  return RmsNormFunction::apply(x, weight, eps);
}

torch::Tensor FusedRope(const torch::Tensor& x, int64_t heads, const torch::Tensor& cos_half,
                        const torch::Tensor& sin_half) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) % (2 * heads) == 0, "rope input must be (B, T, N * D), D even");
  const int64_t half = x.size(2) / heads / 2;
  TORCH_CHECK(cos_half.size(-1) == half && cos_half.size(-2) == x.size(1) &&
                  (cos_half.dim() == 2 || (cos_half.dim() == 3 && cos_half.size(0) == x.size(0))),
              "rope angles must be (T, D/2) or (B, T, D/2)");
  return RopeFunction::apply(x, heads, cos_half, sin_half);
}

torch::Tensor FusedCausalAttention(const torch::Tensor& q, const torch::Tensor& k,
                                   const torch::Tensor& v, int64_t past, int64_t window, double p) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t K = k.size(1), S = k.size(2);
  TORCH_CHECK(K > 0 && H % K == 0 && past + T == S, "attention shapes do not fit");
  // Query heads h = kv * G + g share key head kv: viewed as (B * K, G * T, D),
  // each key head's G query heads are one batch of the products.
  const int64_t G = H / K;
  torch::Tensor scores = torch::bmm(q.contiguous().view({B * K, G * T, D}),
                                    k.contiguous().view({B * K, S, D}).transpose(1, 2));
  torch::Tensor probs =
      CausalSoftmaxFunction::apply(scores, T, past, window, 1.0 / std::sqrt(double(D)));
  if (p > 0) probs = torch::dropout(probs, p, /*train=*/true);
  return torch::bmm(probs, v.contiguous().view({B * K, S, D})).view({B, H, T, D});
}

torch::Tensor FusedCrossEntropySum(const torch::Tensor& logits, const torch::Tensor& targets,
                                   int64_t ignore_index) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) &&
                  targets.scalar_type() == torch::kInt64,
              "cross-entropy needs logits (N, V) and int64 targets (N)");
  return CrossEntropyFunction::apply(logits, targets, ignore_index);
}

}  // namespace tuneforge::engine
