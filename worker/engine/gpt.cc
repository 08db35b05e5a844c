#include "worker/engine/gpt.h"

#include <cmath>
#include <random>

#include <torch/version.h>

namespace tuneforge::engine {

namespace F = torch::nn::functional;

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GptConfig& c)
    : n_head_(c.n_head),
      dropout_(c.dropout),
      qkv_(register_module("qkv", torch::nn::Linear(c.d_model, 3 * c.d_model))),
      proj_(register_module("proj", torch::nn::Linear(c.d_model, c.d_model))) {
  TORCH_CHECK(c.d_model % c.n_head == 0, "d_model (", c.d_model,
              ") must be divisible by n_head (", c.n_head, ")");
  causal_mask_ = register_buffer(
      "causal_mask",
      torch::ones({c.context_length, c.context_length}, torch::kBool).triu(1));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x, KvCache* cache,
                                               size_t layer) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), H = n_head_, D = C / H;
  std::vector<torch::Tensor> qkv = qkv_->forward(x).split(C, /*dim=*/2);  // 3 x (B, T, C)
  torch::Tensor q = qkv[0].view({B, T, H, D}).transpose(1, 2);  // (B, H, T, D)
  torch::Tensor k = qkv[1].view({B, T, H, D}).transpose(1, 2);  // (B, H, T, D)
  torch::Tensor v = qkv[2].view({B, T, H, D}).transpose(1, 2);  // (B, H, T, D)
  const double p = is_training() ? dropout_ : 0.0;
  torch::Tensor y;
  if (cache == nullptr) {
#if TORCH_VERSION_MAJOR >= 2
    // Fused kernels (flash / memory-efficient attention on CUDA).
    y = at::scaled_dot_product_attention(q, k, v, {}, p, /*is_causal=*/true);
#else
    torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(D));  // (B, H, T, T)
    att = att.masked_fill(causal_mask_.index({torch::indexing::Slice(0, T),
                                              torch::indexing::Slice(0, T)}),
                          -std::numeric_limits<float>::infinity());
    att = torch::softmax(att, -1);
    if (p > 0) att = torch::dropout(att, p, /*train=*/true);
    y = torch::matmul(att, v);  // (B, H, T, D)
#endif
  } else {
    const int64_t past = cache->length;
    if (cache->keys.size() <= layer) {
      cache->keys.resize(layer + 1);
      cache->values.resize(layer + 1);
    }
    if (past > 0) {
      k = torch::cat({cache->keys[layer], k}, 2);    // (B, H, past + T, D)
      v = torch::cat({cache->values[layer], v}, 2);  // (B, H, past + T, D)
    }
    cache->keys[layer] = k;
    cache->values[layer] = v;
    using torch::indexing::Slice;
    torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(D));  // (B, H, T, past + T)
    att = att.masked_fill(causal_mask_.index({Slice(past, past + T), Slice(0, past + T)}),
                          -std::numeric_limits<float>::infinity());
    y = torch::matmul(torch::softmax(att, -1), v);  // (B, H, T, D)
  }
  y = y.transpose(1, 2).contiguous().view({B, T, C});  // (B, T, C)
  return proj_->forward(y);
}

MlpImpl::MlpImpl(const GptConfig& c)
    : fc_(register_module("fc", torch::nn::Linear(c.d_model, 4 * c.d_model))),
      proj_(register_module("proj", torch::nn::Linear(4 * c.d_model, c.d_model))) {}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = torch::gelu(fc_->forward(x), "tanh");  // (B, T, 4C)
  return proj_->forward(h);                                 // (B, T, C)
}

BlockImpl::BlockImpl(const GptConfig& c)
    : ln1_(register_module("ln1", torch::nn::LayerNorm(
                                      torch::nn::LayerNormOptions({c.d_model})))),
      attn_(register_module("attn", CausalSelfAttention(c))),
      ln2_(register_module("ln2", torch::nn::LayerNorm(
                                      torch::nn::LayerNormOptions({c.d_model})))),
      mlp_(register_module("mlp", Mlp(c))) {}

torch::Tensor BlockImpl::forward(torch::Tensor x, KvCache* cache, size_t layer) {
  x = x + attn_->forward(ln1_->forward(x), cache, layer);  // (B, T, C)
  x = x + mlp_->forward(ln2_->forward(x));   // (B, T, C)
  return x;
}

GptImpl::GptImpl(const GptConfig& c)
    : config_(c),
      wte_(register_module("wte", torch::nn::Embedding(c.vocab_size, c.d_model))),
      wpe_(register_module("wpe", torch::nn::Embedding(c.context_length, c.d_model))),
      blocks_(register_module("blocks", torch::nn::ModuleList())),
      ln_f_(register_module("ln_f", torch::nn::LayerNorm(
                                        torch::nn::LayerNormOptions({c.d_model})))),
      drop_(register_module("drop", torch::nn::Dropout(c.dropout))) {
  for (int64_t i = 0; i < c.n_layer; ++i) blocks_->push_back(Block(c));
  // GPT-2 initialisation: N(0, 0.02), residual projections scaled down by
  // sqrt(2 * n_layer) so the residual stream's variance does not grow with depth.
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * double(c.n_layer));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (name.find("ln") != std::string::npos) continue;  // LayerNorm keeps 1 and 0
    if (p.dim() == 1) {
      p.zero_();
    } else if (name.size() >= 11 && name.compare(name.size() - 11, 11, "proj.weight") == 0) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, 0.02);
    }
  }
}

torch::Tensor GptImpl::forward(const torch::Tensor& ids, KvCache* cache) {
  const int64_t past = cache ? cache->length : 0;
  const int64_t T = ids.size(1);
  TORCH_CHECK(past + T <= config_.context_length, "sequence of ", past + T,
              " tokens is longer than the context length ", config_.context_length);
  torch::Tensor pos = torch::arange(past, past + T, ids.options());  // (T)
  torch::Tensor x = drop_->forward(wte_->forward(ids) + wpe_->forward(pos));  // (B, T, C)
  size_t layer = 0;
  for (const auto& block : *blocks_) x = block->as<Block>()->forward(x, cache, layer++);
  x = ln_f_->forward(x);                      // (B, T, C)
  if (cache) cache->length += T;
  return F::linear(x, wte_->weight);          // (B, T, V), tied head
}

std::vector<int64_t> Generate(Gpt& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& o, bool use_cache) {
  TORCH_CHECK(!prompt.empty(), "generation needs a prompt of at least one token");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> ids = prompt, out;
  KvCache cache;
  const int64_t context = model->config().context_length;
  torch::Tensor input = torch::tensor(ids, torch::kInt64).unsqueeze(0);  // (1, T)
  for (int i = 0; i < o.max_new_tokens && static_cast<int64_t>(ids.size()) < context; ++i) {
    torch::Tensor logits = use_cache ? model->forward(input, &cache)
                                     : model->forward(torch::tensor(ids, torch::kInt64).unsqueeze(0));
    torch::Tensor last = logits[0][-1].to(torch::kFloat64);  // (V)
    int64_t next;
    if (o.temperature <= 0) {
      next = last.argmax().item<int64_t>();
    } else {
      torch::Tensor probs = torch::softmax(last / o.temperature, -1);  // (V)
      auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
      const auto* p = sorted.data_ptr<double>();
      const auto* idx = order.data_ptr<int64_t>();
      int64_t keep = 0;
      double mass = 0;
      while (keep < sorted.size(0) && (keep == 0 || mass < o.top_p)) mass += p[keep++];
      double r = std::uniform_real_distribution<double>(0.0, mass)(rng);
      next = idx[keep - 1];
      for (int64_t k = 0; k < keep; ++k) {
        if ((r -= p[k]) <= 0) {
          next = idx[k];
          break;
        }
      }
    }
    if (next == o.stop_token) break;
    ids.push_back(next);
    out.push_back(next);
    input = torch::tensor(std::vector<int64_t>{next}, torch::kInt64).unsqueeze(0);  // (1, 1)
  }
  if (was_training) model->train();
  return out;
}

int64_t GptImpl::ParameterCount() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace tuneforge::engine
