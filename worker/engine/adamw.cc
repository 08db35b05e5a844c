#include "worker/engine/adamw.h"

#include <cmath>
#include <stdexcept>

#include <ATen/Parallel.h>

#include "worker/engine/cpu_kernels.h"

namespace tuneforge::engine {

AdamW::AdamW(std::vector<Param> params, Options options)
    : params_(std::move(params)), options_(options) {
  for (const Param& p : params_) {
    exp_avg_.push_back(torch::zeros_like(p.tensor));
    exp_avg_sq_.push_back(torch::zeros_like(p.tensor));
  }
}

namespace {

// Values per piece when a parameter is split between threads; the pieces
// are fixed by the size alone, so sums come out the same for any threads.
constexpr int64_t kPiece = 1 << 15;

}  // namespace

bool AdamW::Fused(size_t i) const {
  const torch::Tensor& p = params_[i].tensor;
  const torch::Tensor& g = p.grad();
  return options_.fused && p.device().is_cpu() && p.scalar_type() == torch::kFloat32 &&
         p.is_contiguous() && g.defined() && g.scalar_type() == torch::kFloat32 &&
         g.is_contiguous() && g.layout() == torch::kStrided;
}

double AdamW::GradNorm() const {
  torch::NoGradGuard no_grad;
  double sum = 0;
  std::vector<torch::Tensor> norms;  // of the parameters outside the kernels
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& g = params_[i].tensor.grad();
    if (!g.defined()) continue;
    if (!Fused(i)) {
      norms.push_back(g.norm());
      continue;
    }
    const int64_t n = g.numel(), pieces = (n + kPiece - 1) / kPiece;
    const float* data = g.data_ptr<float>();
    std::vector<double> piece_sums(pieces);
    at::parallel_for(0, pieces, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        piece_sums[k] = kernels::SumOfSquares(data + k * kPiece, std::min(kPiece, n - k * kPiece));
      }
    });
    for (double s : piece_sums) sum += s;
  }
  if (!norms.empty()) sum += torch::stack(norms).pow(2).sum().item<double>();
  return std::sqrt(sum);
}

void AdamW::Step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1 - std::pow(b1, double(steps_));
  const double bias2_sqrt = std::sqrt(1 - std::pow(b2, double(steps_)));
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].tensor;
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const double decay = params_[i].decay ? options_.weight_decay : 0.0;
    if (Fused(i)) {
      const kernels::AdamWStep step{float(1 - lr * decay), float(b1), float(b2),
                                    float(lr / bias1), float(bias2_sqrt), float(options_.eps),
                                    float(grad_scale)};
      float* param = p.data_ptr<float>();
      float* m = exp_avg_[i].data_ptr<float>();
      float* v = exp_avg_sq_[i].data_ptr<float>();
      const float* grad = g.data_ptr<float>();
      at::parallel_for(0, p.numel(), kPiece, [&](int64_t b, int64_t e) {
        kernels::AdamW(step, grad + b, param + b, m + b, v + b, e - b);
      });
      continue;
    }
    const torch::Tensor scaled = grad_scale == 1.0 ? g : g * grad_scale;
    if (decay > 0) p.mul_(1 - lr * decay);
    exp_avg_[i].mul_(b1).add_(scaled, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(scaled, scaled, 1 - b2);
    torch::Tensor denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(options_.eps);
    p.addcdiv_(exp_avg_[i], denom, -lr / bias1);
  }
}

void AdamW::ZeroGrad() {
  for (Param& p : params_) {
    if (p.tensor.grad().defined()) p.tensor.mutable_grad().reset();
  }
}

std::map<std::string, torch::Tensor> AdamW::State() const {
  std::map<std::string, torch::Tensor> state;
  for (size_t i = 0; i < params_.size(); ++i) {
    state["exp_avg." + params_[i].name] = exp_avg_[i];
    state["exp_avg_sq." + params_[i].name] = exp_avg_sq_[i];
  }
  state["step"] = torch::tensor({steps_}, torch::kInt64);
  return state;
}

void AdamW::LoadState(const std::map<std::string, torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  auto take = [&](const std::string& key, torch::Tensor& into) {
    auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error("optimizer state: missing " + key);
    if (it->second.sizes() != into.sizes()) {
      throw std::runtime_error("optimizer state: " + key + " has another shape");
    }
    into.copy_(it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    take("exp_avg." + params_[i].name, exp_avg_[i]);
    take("exp_avg_sq." + params_[i].name, exp_avg_sq_[i]);
  }
  auto step = state.find("step");
  if (step == state.end()) throw std::runtime_error("optimizer state: missing step");
  steps_ = step->second.item<int64_t>();
}

}  // namespace tuneforge::engine
