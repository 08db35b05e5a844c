#include "worker/engine/adamw.h"

#include <cmath>
#include <stdexcept>

namespace tuneforge::engine {

AdamW::AdamW(std::vector<Param> params, Options options)
    : params_(std::move(params)), options_(options) {
  for (const Param& p : params_) {
    exp_avg_.push_back(torch::zeros_like(p.tensor));
    exp_avg_sq_.push_back(torch::zeros_like(p.tensor));
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1 - std::pow(b1, double(steps_));
  const double bias2_sqrt = std::sqrt(1 - std::pow(b2, double(steps_)));
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].tensor;
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (params_[i].decay && options_.weight_decay > 0) p.mul_(1 - lr * options_.weight_decay);
    exp_avg_[i].mul_(b1).add_(g, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
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
