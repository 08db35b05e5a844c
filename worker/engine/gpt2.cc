// GPT-2: x = wte[ids] + wpe[pos]; per block  x += attn(ln_1(x));
// x += mlp(ln_2(x)), with LayerNorm, one fused QKV projection (c_attn), a
// GELU (tanh) MLP, then ln_f and the head tied to wte. Hugging Face stores
// its projections as Conv1D, (in, out): the transpose of ours.
#include <string>

#include "worker/engine/family.h"

namespace tuneforge::engine {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class Gpt2AttentionImpl : public torch::nn::Module, public ComputeAware {
 public:
  explicit Gpt2AttentionImpl(const ModelConfig& c) : config_(c) {
    c_attn_ = register_module("c_attn", Projection(c.d_model, 3 * c.d_model, true));  // C -> 3C
    c_proj_ = register_module("c_proj", Projection(c.d_model, c.d_model, true));      // C -> C
  }
  void SetCompute(const ComputeOptions& o) override { compute_ = o; }

  torch::Tensor forward(const torch::Tensor& x, KvCache* cache, size_t layer,
                        const torch::Tensor& spans) {
    const int64_t B = x.size(0), T = x.size(1), H = config_.n_head, D = config_.head_dim;
    // 3 x (B, T, C), viewed as heads in the projection's layout (B, T, H, D).
    std::vector<torch::Tensor> qkv = c_attn_->forward(x).split(H * D, /*dim=*/2);
    torch::Tensor y = AttendCausally(qkv[0].view({B, T, H, D}), qkv[1].view({B, T, H, D}),
                                     qkv[2].view({B, T, H, D}), config_, cache, layer, spans,
                                     is_training(), compute_);  // (B, T, C)
    return c_proj_->forward(y);  // (B, T, C)
  }

 private:
  ModelConfig config_;
  ComputeOptions compute_;
  Projection c_attn_{nullptr}, c_proj_{nullptr};
};
TORCH_MODULE(Gpt2Attention);

class Gpt2MlpImpl : public torch::nn::Module, public ComputeAware {
 public:
  explicit Gpt2MlpImpl(const ModelConfig& c) {
    c_fc_ = register_module("c_fc", Projection(c.d_model, c.d_ff, true));      // C -> F
    c_proj_ = register_module("c_proj", Projection(c.d_ff, c.d_model, true));  // F -> C
  }
  void SetCompute(const ComputeOptions& o) override { fused_ = o.fused_kernels; }
  torch::Tensor forward(const torch::Tensor& x) {
    return c_proj_->forward(GeluTanh(c_fc_->forward(x), fused_));  // via (B, T, F)
  }

 private:
  bool fused_ = true;
  Projection c_fc_{nullptr}, c_proj_{nullptr};
};
TORCH_MODULE(Gpt2Mlp);

class Gpt2BlockImpl : public BlockImpl {
 public:
  explicit Gpt2BlockImpl(const ModelConfig& c) {
    ln_1_ = register_module("ln_1", Norm(c.d_model, c.norm_eps, /*rms=*/false));
    attn_ = register_module("attn", Gpt2Attention(c));
    ln_2_ = register_module("ln_2", Norm(c.d_model, c.norm_eps, /*rms=*/false));
    mlp_ = register_module("mlp", Gpt2Mlp(c));
  }
  torch::Tensor forward(torch::Tensor x, const Rope* rope, KvCache* cache, size_t layer,
                        const torch::Tensor& spans) override {
    x = x + attn_->forward(ln_1_->forward(x), cache, layer, spans);  // (B, T, C)
    return x + mlp_->forward(ln_2_->forward(x));                     // (B, T, C)
  }

 private:
  Norm ln_1_{nullptr}, ln_2_{nullptr};
  Gpt2Attention attn_{nullptr};
  Gpt2Mlp mlp_{nullptr};
};

std::shared_ptr<BlockImpl> MakeBlock(const ModelConfig& c) {
  TORCH_CHECK(c.n_head * c.head_dim == c.d_model, "GPT-2 needs n_head * head_dim == d_model");
  return std::make_shared<Gpt2BlockImpl>(c);
}

// The projections into the residual stream start smaller, so its variance
// does not grow with depth.
bool ResidualScaled(const std::string& name) { return EndsWith(name, "c_proj.weight"); }

std::string HfName(const std::string& ours, bool* transposed) {
  *transposed = EndsWith(ours, ".weight") && ours.find(".lora_") == std::string::npos &&
                (ours.find(".c_attn.") != std::string::npos ||
                 ours.find(".c_proj.") != std::string::npos ||
                 ours.find(".c_fc.") != std::string::npos);
  return "transformer." + ours;
}

}  // namespace

const Family& Gpt2Family() {
  static const Family family{"wte",       "wpe",          "h",     "ln_f", /*rms_norm=*/false,
                             MakeBlock,   nullptr,        ResidualScaled, HfName,
                             {"c_attn"},  /*fan_in_fan_out=*/true};
  return family;
}

}  // namespace tuneforge::engine
