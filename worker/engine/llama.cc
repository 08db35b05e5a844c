// Llama (and Mistral, Qwen2, SmolLM, TinyLlama): x = embed_tokens[ids]; per
// block  x += self_attn(input_layernorm(x)); x += mlp(post_attention_layernorm(x)),
// with RMSNorm, rotary position embeddings (Hugging Face's half-rotation
// layout; Llama 3.1's scaling of long wavelengths), K <= H key/value heads
// (grouped-query attention), optional QKV biases (Qwen2), a sliding window
// (Mistral), and a SwiGLU MLP down(silu(gate(x)) * up(x)); then norm and
// lm_head, or the head tied to embed_tokens.
#include <cmath>
#include <string>

#include "worker/engine/family.h"

namespace tuneforge::engine {
namespace {

class LlamaAttentionImpl : public torch::nn::Module, public ComputeAware {
 public:
  explicit LlamaAttentionImpl(const ModelConfig& c) : config_(c) {
    const int64_t C = c.d_model, q = c.n_head * c.head_dim, kv = c.n_kv_head * c.head_dim;
    q_proj_ = register_module("q_proj", Projection(C, q, c.qkv_bias));   // C -> H*D
    k_proj_ = register_module("k_proj", Projection(C, kv, c.qkv_bias));  // C -> K*D
    v_proj_ = register_module("v_proj", Projection(C, kv, c.qkv_bias));  // C -> K*D
    o_proj_ = register_module("o_proj", Projection(q, C, c.o_bias));     // H*D -> C
  }
  void SetCompute(const ComputeOptions& o) override { compute_ = o; }

  torch::Tensor forward(const torch::Tensor& x, const Rope& rope, KvCache* cache, size_t layer,
                        const torch::Tensor& spans) {
    const int64_t B = x.size(0), T = x.size(1), H = config_.n_head, K = config_.n_kv_head;
    const bool fused = compute_.fused_kernels;
    // Heads stay in the projections' layout: (B, T, H, D), (B, T, K, D), (B, T, K, D).
    torch::Tensor q = RotaryEmbedding(q_proj_->forward(x), H, rope, fused);
    torch::Tensor k = RotaryEmbedding(k_proj_->forward(x), K, rope, fused);
    torch::Tensor v = v_proj_->forward(x).view({B, T, K, config_.head_dim});
    torch::Tensor y = AttendCausally(q, k, v, config_, cache, layer, spans, is_training(),
                                     compute_);  // (B, T, H*D)
    return o_proj_->forward(y);  // (B, T, C)
  }

 private:
  ModelConfig config_;
  ComputeOptions compute_;
  Projection q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
};
TORCH_MODULE(LlamaAttention);

class LlamaMlpImpl : public torch::nn::Module, public ComputeAware {
 public:
  explicit LlamaMlpImpl(const ModelConfig& c) {
    gate_proj_ = register_module("gate_proj", Projection(c.d_model, c.d_ff, false));  // C -> F
    up_proj_ = register_module("up_proj", Projection(c.d_model, c.d_ff, false));      // C -> F
    down_proj_ = register_module("down_proj", Projection(c.d_ff, c.d_model, false));  // F -> C
  }
  void SetCompute(const ComputeOptions& o) override { fused_ = o.fused_kernels; }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor gate = gate_proj_->forward(x), up = up_proj_->forward(x);  // (B, T, F) each
    return down_proj_->forward(SwiGlu(gate, up, fused_));                   // (B, T, C)
  }

 private:
  bool fused_ = true;
  Projection gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
};
TORCH_MODULE(LlamaMlp);

class LlamaBlockImpl : public BlockImpl {
 public:
  explicit LlamaBlockImpl(const ModelConfig& c) {
    input_layernorm_ = register_module("input_layernorm", Norm(c.d_model, c.norm_eps, true));
    self_attn_ = register_module("self_attn", LlamaAttention(c));
    post_attention_layernorm_ =
        register_module("post_attention_layernorm", Norm(c.d_model, c.norm_eps, true));
    mlp_ = register_module("mlp", LlamaMlp(c));
  }
  torch::Tensor forward(torch::Tensor x, const Rope* rope, KvCache* cache, size_t layer,
                        const torch::Tensor& spans) override {
    x = x + self_attn_->forward(input_layernorm_->forward(x), *rope, cache, layer, spans);
    return x + mlp_->forward(post_attention_layernorm_->forward(x));  // (B, T, C)
  }

 private:
  Norm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
  LlamaAttention self_attn_{nullptr};
  LlamaMlp mlp_{nullptr};
};

std::shared_ptr<BlockImpl> MakeBlock(const ModelConfig& c) {
  return std::make_shared<LlamaBlockImpl>(c);
}

// Hugging Face's default rope, theta^(-2i/D) computed in float32 as it does,
// and Llama 3.1's: long wavelengths slowed by `factor`, a smooth blend
// between the short and the long.
torch::Tensor RotaryInvFreq(const ModelConfig& c) {
  const int64_t D = c.head_dim;
  torch::Tensor exponents = torch::arange(0, D, 2, torch::kInt64).to(torch::kFloat32) / double(D);
  torch::Tensor inv_freq = 1.0 / torch::pow(c.rope_theta, exponents);  // (D/2)
  if (c.rope_factor > 0) {
    const double old_context = double(c.rope_original_context);
    const double low_wavelen = old_context / c.rope_low_freq_factor;
    const double high_wavelen = old_context / c.rope_high_freq_factor;
    torch::Tensor wavelen = 2 * M_PI / inv_freq;
    torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv_freq / c.rope_factor, inv_freq);
    torch::Tensor smooth = (old_context / wavelen - c.rope_low_freq_factor) /
                           (c.rope_high_freq_factor - c.rope_low_freq_factor);
    torch::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
    torch::Tensor medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  return inv_freq;
}

bool ResidualScaled(const std::string&) { return false; }

std::string HfName(const std::string& ours, bool* transposed) {
  *transposed = false;
  return ours.rfind("lm_head.", 0) == 0 ? ours : "model." + ours;
}

}  // namespace

const Family& LlamaFamily() {
  static const Family family{"embed_tokens", "",       "layers", "norm", /*rms_norm=*/true,
                             MakeBlock,      RotaryInvFreq,      ResidualScaled, HfName,
                             {"q_proj", "v_proj"},   /*fan_in_fan_out=*/false};
  return family;
}

}  // namespace tuneforge::engine
