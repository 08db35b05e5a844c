// AdamW (Loshchilov & Hutter), written out so that its whole state is a set
// of named tensors a checkpoint can save and restore exactly. Same update as
// torch.optim.AdamW:
//
//   p -= lr * wd * p                     (decoupled weight decay)
//   m  = b1 * m + (1 - b1) * g
//   v  = b2 * v + (1 - b2) * g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
//   AdamW opt({{"h.0.attn.c_attn.weight", w, /*decay=*/true}, ...}, {});
//   loss.backward();
//   double norm = opt.GradNorm();            // for clipping: scale = max / norm
//   opt.Step(lr, /*grad_scale=*/1.0); opt.ZeroGrad();
//
// On float32 CPU parameters the whole update is one pass over each
// parameter, its gradient and its two moments (cpu_kernels.h), split between
// the intra-op threads; elsewhere (CUDA) it runs as libtorch operations.
//
// Not thread-safe.
#ifndef TUNEFORGE_WORKER_ENGINE_ADAMW_H_
#define TUNEFORGE_WORKER_ENGINE_ADAMW_H_

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace tuneforge::engine {

class AdamW {
 public:
  struct Options {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.01;  // on parameters with decay = true
    bool fused = true;           // one pass per parameter where the kernels apply
  };
  struct Param {
    std::string name;
    torch::Tensor tensor;
    bool decay = true;  // false for biases and norms
  };

  AdamW(std::vector<Param> params, Options options);

  // The L2 norm of all gradients together (computed in double on the CPU,
  // in a fixed order, so the same gradients give the same bits).
  double GradNorm() const;
  // One update, with every gradient taken times grad_scale (clipping).
  void Step(double lr, double grad_scale = 1.0);
  void ZeroGrad();
  int64_t steps() const { return steps_; }

  // "exp_avg.{name}", "exp_avg_sq.{name}" for every parameter, and "step".
  std::map<std::string, torch::Tensor> State() const;
  // Restores State(); every parameter's moments must be there with its shape.
  void LoadState(const std::map<std::string, torch::Tensor>& state);

 private:
  bool Fused(size_t i) const;  // whether parameter i takes the fused kernel

  std::vector<Param> params_;
  Options options_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;  // per parameter, its shape
  int64_t steps_ = 0;
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_ADAMW_H_
