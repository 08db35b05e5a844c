#include "worker/engine/transformer.h"

#include <cmath>
#include <random>

#include "worker/engine/family.h"

namespace tuneforge::engine {

namespace F = torch::nn::functional;

namespace {

// x W^T + b with the product computed in `dtype`; the result in x's dtype.
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                     torch::ScalarType dtype) {
  if (dtype == x.scalar_type()) return F::linear(x, w, b);
  return F::linear(x.to(dtype), w.to(dtype), b.defined() ? b.to(dtype) : b).to(x.scalar_type());
}

}  // namespace

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool with_bias) {
  // Initialised as torch::nn::Linear is (the model's own init then sets the
  // weights; this keeps the random stream, and so every preset, unchanged).
  weight = register_parameter("weight", torch::empty({out, in}));
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(double(in));
    bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  }
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = Linear(x, weight, bias, matmul_dtype_);  // (B, T, out)
  if (!lora_a_.defined()) return y;
  torch::Tensor h = lora_dropout_ > 0 ? torch::dropout(x, lora_dropout_, is_training()) : x;
  torch::Tensor low = Linear(h, lora_a_, {}, matmul_dtype_);          // (B, T, r)
  return y + Linear(low, lora_b_, {}, matmul_dtype_) * lora_scale_;  // (B, T, out)
}

void ProjectionImpl::AddLora(int64_t rank, double alpha, double dropout) {
  const int64_t in = weight.size(1), out = weight.size(0);
  const double bound = 1.0 / std::sqrt(double(in));  // Kaiming uniform with a = sqrt(5)
  auto a = std::make_shared<torch::nn::Module>();
  auto b = std::make_shared<torch::nn::Module>();
  lora_a_ = a->register_parameter("weight", torch::empty({rank, in}, weight.options()).uniform_(-bound, bound));
  lora_b_ = b->register_parameter("weight", torch::zeros({out, rank}, weight.options()));
  register_module("lora_A", a);
  register_module("lora_B", b);
  lora_scale_ = alpha / double(rank);
  lora_dropout_ = dropout;
}

void ProjectionImpl::MergeLora() {
  if (!lora_a_.defined()) return;
  torch::NoGradGuard no_grad;
  weight.add_(torch::matmul(lora_b_, lora_a_) * lora_scale_);  // (out, in)
}

NormImpl::NormImpl(int64_t dim, double eps, bool rms) : eps_(eps), rms_(rms) {
  weight_ = register_parameter("weight", torch::ones({dim}));
  if (!rms) bias_ = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (!rms_) return F::layer_norm(x, F::LayerNormFuncOptions({x.size(-1)}).weight(weight_).bias(bias_).eps(eps_));
  return RmsNorm(x, weight_, eps_, fused_);
}

torch::Tensor AttendCausally(const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                             const ModelConfig& c, KvCache* cache, size_t layer,
                             const torch::Tensor& spans, bool training,
                             const ComputeOptions& compute) {
  const int64_t B = q.size(0), T = q.size(1);
  AttentionOptions options;
  options.past = cache ? cache->length : 0;
  options.window = c.sliding_window;
  options.dropout = training ? c.dropout : 0.0;
  options.matmul_dtype = compute.matmul_dtype;
  options.fused = compute.fused_kernels;
  options.spans = spans;
  if (cache) {
    if (cache->keys.size() <= layer) {
      cache->keys.resize(layer + 1);
      cache->values.resize(layer + 1);
    }
    if (options.past > 0) {
      k = torch::cat({cache->keys[layer], k}, 1);    // (B, past + T, K, D)
      v = torch::cat({cache->values[layer], v}, 1);  // (B, past + T, K, D)
    }
    cache->keys[layer] = k;
    cache->values[layer] = v;
  }
  torch::Tensor y = CausalAttention(q, k, v, options);  // (B, T, H, D)
  return y.view({B, T, q.size(2) * q.size(3)});         // (B, T, H*D)
}

const Family& FamilyOf(const ModelConfig& c) {
  switch (c.architecture) {
    case Architecture::kGpt2:
      return Gpt2Family();
    case Architecture::kLlama:
      break;
  }
  return LlamaFamily();
}

TransformerImpl::TransformerImpl(const ModelConfig& c) : config_(c), family_(FamilyOf(c)) {
  TORCH_CHECK(c.n_kv_head > 0 && c.n_head % c.n_kv_head == 0, "n_kv_head (", c.n_kv_head,
              ") must divide n_head (", c.n_head, ")");
  embed_ = register_module(family_.embed, torch::nn::Embedding(c.vocab_size, c.d_model));
  if (*family_.positions) {
    wpe_ = register_module(family_.positions, torch::nn::Embedding(c.context_length, c.d_model));
  }
  blocks_ = register_module(family_.blocks, torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layer; ++i) blocks_->push_back(family_.make_block(c));
  norm_f_ = register_module(family_.final_norm, Norm(c.d_model, c.norm_eps, family_.rms_norm));
  if (!c.tie_embeddings) {
    lm_head_ = register_module("lm_head", Projection(c.d_model, c.vocab_size, false));
  }
  drop_ = register_module("drop", torch::nn::Dropout(c.dropout));
  if (family_.rotary_inv_freq) {
    inv_freq_ = register_buffer("rope_inv_freq", family_.rotary_inv_freq(c));  // (D/2)
  }
  // Initialisation: N(0, 0.02), or the family's smaller std for residual
  // projections. Norms keep weight 1 and bias 0; Linear biases start at 0.
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * double(c.n_layer));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (p.dim() == 1) {
      if (name.find("ln_") == std::string::npos && name.find("norm") == std::string::npos) p.zero_();
    } else if (family_.residual_scaled(name)) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, 0.02);
    }
  }
}

Rope TransformerImpl::RopeFor(int64_t past, int64_t T, const torch::Tensor& positions,
                              const torch::Device& device) const {
  torch::Tensor inv_freq = inv_freq_.to(device);
  torch::Tensor freqs;
  if (positions.defined()) {
    freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // (B, T, D/2)
  } else {
    torch::Tensor pos = torch::arange(past, past + T, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    freqs = torch::outer(pos, inv_freq);  // (T, D/2)
  }
  torch::Tensor angles = torch::cat({freqs, freqs}, -1);  // (T, D) or (B, T, D)
  return Rope{angles.cos(), angles.sin(), freqs.cos(), freqs.sin()};
}

namespace {

// Holds the random state of `device` as it was when constructed, for a
// recomputation to draw the same dropout masks; puts back the state it
// found when done.
class ReplayRandom {
 public:
  ReplayRandom(const torch::Device& device, const torch::Tensor& saved)
      : generator_(at::globalContext().defaultGenerator(device)) {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    current_ = generator_.get_state();
    generator_.set_state(saved);
  }
  ~ReplayRandom() {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_state(current_);
  }
  static torch::Tensor State(const torch::Device& device) {
    at::Generator generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    return generator.get_state();
  }

 private:
  at::Generator generator_;
  torch::Tensor current_;
};

// One block run without keeping its activations: backward runs the block
// again (with the random state of the first run, so dropout masks match)
// and backpropagates through that, which fills the block's parameter
// gradients and returns the input's.
class RecomputedBlock : public torch::autograd::Function<RecomputedBlock> {
 public:
  // The optional tensors may hold undefined ones (GPT-2 has no rope, an
  // unpacked batch no mask); none of them needs a gradient.
  using Optional = c10::optional<torch::Tensor>;
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               BlockImpl* block, const Optional& cos, const Optional& sin,
                               const Optional& cos_half, const Optional& sin_half,
                               const Optional& spans) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);  // owned by the model
    ctx->saved_data["cos"] = *cos;
    ctx->saved_data["sin"] = *sin;
    ctx->saved_data["cos_half"] = *cos_half;
    ctx->saved_data["sin_half"] = *sin_half;
    ctx->saved_data["spans"] = *spans;
    ctx->saved_data["random"] = ReplayRandom::State(x.device());
    return Run(block, x, Rope{*cos, *sin, *cos_half, *sin_half}, *spans);  // grad mode is off here
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    torch::Tensor y;
    {
      ReplayRandom replay(x.device(), ctx->saved_data["random"].toTensor());
      torch::AutoGradMode enable(true);
      auto& saved = ctx->saved_data;
      y = Run(block, x,
              Rope{saved["cos"].toTensor(), saved["sin"].toTensor(), saved["cos_half"].toTensor(),
                   saved["sin_half"].toTensor()},
              saved["spans"].toTensor());
    }
    torch::autograd::backward({y}, {grad[0]});
    return {x.grad(), {}, {}, {}, {}, {}, {}};
  }

 private:
  static torch::Tensor Run(BlockImpl* block, const torch::Tensor& x, const Rope& rope,
                           const torch::Tensor& spans) {
    return block->forward(x, rope.cos.defined() ? &rope : nullptr, nullptr, 0, spans);
  }
};

}  // namespace

void TransformerImpl::SetCompute(const ComputeOptions& options) {
  compute_ = options;
  for (const auto& module : modules()) {
    if (auto* aware = dynamic_cast<ComputeAware*>(module.get())) aware->SetCompute(options);
  }
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& ids, KvCache* cache,
                                       const Packing* packing) {
  TORCH_CHECK(!(cache && packing), "packed rows are not decoded with a KV cache");
  const int64_t past = cache ? cache->length : 0;
  const int64_t T = ids.size(1);
  TORCH_CHECK(past + T <= config_.context_length, "sequence of ", past + T,
              " tokens is longer than the context length ", config_.context_length);
  const torch::Tensor positions = packing ? packing->positions : torch::Tensor();  // (B, T)
  torch::Tensor x = embed_->forward(ids);  // (B, T, C)
  Rope rope;
  if (wpe_) {
    x = x + wpe_->forward(positions.defined() ? positions : torch::arange(past, past + T, ids.options()));
  } else {
    rope = RopeFor(past, T, positions, ids.device());
  }
  const torch::Tensor spans = packing ? packing->spans : torch::Tensor();  // (N, 3) on the CPU
  x = drop_->forward(x);
  const bool recompute = compute_.recompute_activations && is_training() && !cache &&
                         torch::GradMode::is_enabled();
  size_t layer = 0;
  for (const auto& module : *blocks_) {
    BlockImpl* block = module->as<BlockImpl>();
    if (recompute) {
      using Optional = RecomputedBlock::Optional;
      x = RecomputedBlock::apply(x, block, Optional(rope.cos), Optional(rope.sin),
                                 Optional(rope.cos_half), Optional(rope.sin_half),
                                 Optional(spans));  // (B, T, C)
    } else {
      x = block->forward(x, wpe_ ? nullptr : &rope, cache, layer++, spans);  // (B, T, C)
    }
  }
  x = norm_f_->forward(x);  // (B, T, C)
  if (cache) cache->length += T;
  return lm_head_ ? lm_head_->forward(x) : Linear(x, embed_->weight, {}, compute_.matmul_dtype);
}

int64_t TransformerImpl::ParameterCount() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

std::string TransformerImpl::HfName(const std::string& ours, bool* transposed) const {
  return family_.hf_name(ours, transposed);
}

std::vector<int64_t> Generate(Transformer& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& o, bool use_cache) {
  TORCH_CHECK(!prompt.empty(), "generation needs a prompt of at least one token");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> ids = prompt, out;
  KvCache cache;
  const int64_t context = model->config().context_length;
  const torch::Device device = model->parameters()[0].device();
  auto on_device = [&](const std::vector<int64_t>& v) {
    return torch::tensor(v, torch::kInt64).unsqueeze(0).to(device);  // (1, len)
  };
  torch::Tensor input = on_device(ids);  // (1, T)
  for (int i = 0; i < o.max_new_tokens && static_cast<int64_t>(ids.size()) < context; ++i) {
    torch::Tensor logits = use_cache ? model->forward(input, &cache)
                                     : model->forward(on_device(ids));
    torch::Tensor last = logits[0][-1].to(torch::kCPU, torch::kFloat64);  // (V)
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
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), next) != o.stop_tokens.end()) break;
    ids.push_back(next);
    out.push_back(next);
    input = on_device({next});  // (1, 1)
  }
  if (was_training) model->train();
  return out;
}

}  // namespace tuneforge::engine
