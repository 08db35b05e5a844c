#include "worker/engine/transformer.h"

#include <gtest/gtest.h>

namespace tuneforge::engine {
namespace {

using torch::indexing::Slice;

ModelConfig SmallGpt2() {
  ModelConfig c;
  c.context_length = 32;
  c.n_layer = 2;
  c.n_head = c.n_kv_head = 2;
  c.d_model = 32;
  c.head_dim = 16;
  c.d_ff = 128;
  return c;
}

// Grouped-query attention (4 query heads share 2 key/value heads).
ModelConfig SmallLlama() {
  ModelConfig c;
  c.architecture = Architecture::kLlama;
  c.model_type = "llama";
  c.context_length = 32;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 32;
  c.head_dim = 8;
  c.d_ff = 72;
  c.qkv_bias = c.o_bias = false;
  c.tie_embeddings = false;
  return c;
}

// Qwen2's shape: Q/K/V biases, a tied head, and Llama 3.1 rope scaling.
ModelConfig SmallQwen2() {
  ModelConfig c = SmallLlama();
  c.model_type = "qwen2";
  c.qkv_bias = true;
  c.tie_embeddings = true;
  c.rope_factor = 8;
  c.rope_original_context = 16;
  return c;
}

// Mistral's sliding window, shorter than the context.
ModelConfig SmallMistral() {
  ModelConfig c = SmallLlama();
  c.model_type = "mistral";
  c.sliding_window = 5;
  return c;
}

class TransformerTest : public ::testing::TestWithParam<ModelConfig> {};

TEST_P(TransformerTest, OutputShapeAndParameterCount) {
  torch::manual_seed(1);
  Transformer model(GetParam());
  torch::Tensor ids = torch::randint(0, 256, {3, 17}, torch::kInt64);  // (B, T)
  torch::Tensor logits = model->forward(ids);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 17, 258}));
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  EXPECT_EQ(model->ParameterCount(), ParameterCount(GetParam()));
}

TEST_P(TransformerTest, SameSeedSameWeights) {
  torch::manual_seed(7);
  Transformer a(GetParam());
  torch::manual_seed(7);
  Transformer b(GetParam());
  torch::Tensor ids = torch::randint(0, 256, {1, 9}, torch::kInt64);
  EXPECT_TRUE(torch::equal(a->forward(ids), b->forward(ids)));
}

TEST_P(TransformerTest, Causality) {
  torch::manual_seed(3);
  Transformer model(GetParam());
  model->eval();
  torch::Tensor ids = torch::randint(0, 256, {2, 20}, torch::kInt64);  // (B, T)
  torch::Tensor changed = ids.clone();
  changed.index_put_({Slice(), 12}, (ids.index({Slice(), 12}) + 1) % 256);
  torch::Tensor a = model->forward(ids);      // (B, T, V)
  torch::Tensor b = model->forward(changed);  // (B, T, V)
  // Positions before the change see the same logits, bit for bit ...
  EXPECT_TRUE(torch::equal(a.index({Slice(), Slice(0, 12)}), b.index({Slice(), Slice(0, 12)})));
  // ... and the changed position onwards do not.
  EXPECT_FALSE(torch::allclose(a.index({Slice(), Slice(12)}), b.index({Slice(), Slice(12)})));
}

TEST_P(TransformerTest, CachedDecodingGivesTheSameLogits) {
  torch::manual_seed(5);
  Transformer model(GetParam());
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 256, {1, 12}, torch::kInt64);  // (1, T)
  torch::Tensor full = model->forward(ids);                           // (1, T, V)
  KvCache cache;
  torch::Tensor prefill = model->forward(ids.index({Slice(), Slice(0, 7)}), &cache);  // 7 at once
  EXPECT_TRUE(torch::allclose(prefill, full.index({Slice(), Slice(0, 7)}), 1e-5, 1e-5));
  for (int64_t t = 7; t < 12; ++t) {  // then one position at a time
    torch::Tensor step = model->forward(ids.index({Slice(), Slice(t, t + 1)}), &cache);
    EXPECT_TRUE(torch::allclose(step[0][0], full[0][t], 1e-5, 1e-5)) << "position " << t;
  }
  EXPECT_EQ(cache.length, 12);
}

TEST_P(TransformerTest, GenerationWithTheCacheEqualsWithout) {
  torch::manual_seed(6);
  Transformer model(GetParam());
  const std::vector<int64_t> prompt = {72, 105, 32};
  SamplingOptions greedy;
  greedy.max_new_tokens = 20;
  EXPECT_EQ(Generate(model, prompt, greedy, true), Generate(model, prompt, greedy, false));
  SamplingOptions sampled = greedy;
  sampled.temperature = 0.9;
  sampled.top_p = 0.8;
  sampled.seed = 17;
  std::vector<int64_t> a = Generate(model, prompt, sampled, true);
  EXPECT_EQ(a, Generate(model, prompt, sampled, false));
  EXPECT_EQ(a.size(), 20u);
  sampled.seed = 18;
  EXPECT_NE(a, Generate(model, prompt, sampled, true));  // the seed matters
  // The context length bounds generation.
  greedy.max_new_tokens = 100;
  EXPECT_EQ(Generate(model, prompt, greedy).size(), 32u - prompt.size());
  greedy.stop_tokens = {Generate(model, prompt, greedy)[0]};
  EXPECT_TRUE(Generate(model, prompt, greedy).empty());
}

TEST_P(TransformerTest, RefusesTooLongSequence) {
  Transformer model(GetParam());
  EXPECT_THROW(model->forward(torch::zeros({1, 33}, torch::kInt64)), c10::Error);
}

// A row packing two sequences (and padding) computes, for each, the logits
// it has alone: no attention across them, positions restarting at 0.
TEST_P(TransformerTest, PackedRowsEqualSeparateSequences) {
  torch::manual_seed(11);
  Transformer model(GetParam());
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor a = torch::randint(0, 256, {1, 9}, torch::kInt64);
  torch::Tensor b = torch::randint(0, 256, {1, 13}, torch::kInt64);
  torch::Tensor pad = torch::zeros({1, 3}, torch::kInt64);
  torch::Tensor row = torch::cat({a, b, pad}, 1);  // (1, 25)
  Packing packing;
  packing.positions = torch::cat({torch::arange(9), torch::arange(13), torch::zeros({3})}).to(torch::kInt64).unsqueeze(0);
  packing.spans = torch::tensor(std::vector<int64_t>{0, 0, 9, 0, 9, 13}, torch::kInt64).view({2, 3});
  torch::Tensor packed = model->forward(row, nullptr, &packing);  // (1, 25, V)
  EXPECT_TRUE(torch::allclose(packed.index({Slice(), Slice(0, 9)}), model->forward(a), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(packed.index({Slice(), Slice(9, 22)}), model->forward(b), 1e-5, 1e-5));
  // Without the packing layout the second sequence sees the first.
  EXPECT_FALSE(torch::allclose(model->forward(row).index({Slice(), Slice(9, 22)}),
                               model->forward(b), 1e-3, 1e-3));
}

// Recomputing blocks in backward gives the gradients of keeping their
// activations, dropout included (its masks are replayed).
TEST_P(TransformerTest, RecomputationGivesTheSameGradients) {
  ModelConfig c = GetParam();
  c.dropout = 0.2;
  torch::manual_seed(12);
  Transformer model(c);
  model->train();
  torch::Tensor ids = torch::randint(0, 256, {2, 16}, torch::kInt64);
  auto gradients = [&](bool recompute) {
    ComputeOptions options;
    options.recompute_activations = recompute;
    model->SetCompute(options);
    model->zero_grad();
    torch::manual_seed(13);
    torch::Tensor loss = model->forward(ids).logsumexp(-1).mean();
    loss.backward();
    std::vector<torch::Tensor> out;
    for (const torch::Tensor& p : model->parameters()) out.push_back(p.grad().clone());
    out.push_back(loss.detach());
    return out;
  };
  std::vector<torch::Tensor> kept = gradients(false), recomputed = gradients(true);
  ASSERT_EQ(kept.size(), recomputed.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_TRUE(torch::allclose(kept[i], recomputed[i], 1e-6, 1e-6)) << "parameter " << i;
  }
  EXPECT_GT(kept[0].abs().sum().item<double>(), 0);
}

// bf16 matrix products: logits close to float32's, but not the same numbers
// (the products really ran in bfloat16), and still float32 out.
TEST_P(TransformerTest, Bf16MatmulsStayCloseToFloat32) {
  torch::manual_seed(14);
  Transformer model(GetParam());
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 256, {2, 16}, torch::kInt64);
  torch::Tensor full = model->forward(ids);
  ComputeOptions bf16;
  bf16.matmul_dtype = torch::kBFloat16;
  model->SetCompute(bf16);
  torch::Tensor half = model->forward(ids);
  EXPECT_EQ(half.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(half, full, 0.05, 0.05));
  EXPECT_FALSE(torch::equal(half, full));
}

INSTANTIATE_TEST_SUITE_P(Families, TransformerTest,
                         ::testing::Values(SmallGpt2(), SmallLlama(), SmallQwen2(), SmallMistral()),
                         [](const auto& info) {
                           const ModelConfig& c = info.param;
                           return c.model_type;
                         });

TEST(TransformerNamesTest, ParametersCarryHuggingFaceNames) {
  Transformer gpt2(SmallGpt2());
  bool transposed = false;
  EXPECT_EQ(gpt2->HfName("h.1.attn.c_attn.weight", &transposed), "transformer.h.1.attn.c_attn.weight");
  EXPECT_TRUE(transposed);
  EXPECT_EQ(gpt2->HfName("h.1.ln_2.weight", &transposed), "transformer.h.1.ln_2.weight");
  EXPECT_FALSE(transposed);
  std::vector<std::string> names;
  Transformer llama(SmallLlama());
  for (const auto& item : llama->named_parameters()) names.push_back(llama->HfName(item.key(), &transposed));
  for (const char* expected :
       {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.layers.1.post_attention_layernorm.weight",
        "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  EXPECT_EQ(names.size(), 1u + 2 * 9 + 1 + 1);  // embed, 2 x 9 per layer, norm, head
}

// The torch-free description of a folder's tensors (which the scheduler
// checks imports against) agrees with the modules, family by family.
TEST_P(TransformerTest, ExpectedTensorsDescribeTheModule) {
  Transformer model(GetParam());
  std::map<std::string, std::vector<int64_t>> ours;
  for (const auto& item : model->named_parameters()) {
    bool transposed = false;
    const std::string name = model->HfName(item.key(), &transposed);
    std::vector<int64_t> shape(item.value().sizes().begin(), item.value().sizes().end());
    if (transposed) std::swap(shape[0], shape[1]);
    ours[name] = shape;
  }
  EXPECT_EQ(ours, ExpectedTensors(GetParam()));
}

// The sliding window changes attention only past its span.
TEST(TransformerTest, SlidingWindowLimitsAttention) {
  torch::manual_seed(9);
  ModelConfig windowed = SmallMistral();
  ModelConfig full = windowed;
  full.sliding_window = 0;
  torch::manual_seed(9);
  Transformer a(windowed);
  torch::manual_seed(9);
  Transformer b(full);
  a->eval();
  b->eval();
  torch::Tensor ids = torch::randint(0, 256, {1, 12}, torch::kInt64);
  torch::Tensor la = a->forward(ids), lb = b->forward(ids);
  EXPECT_TRUE(torch::allclose(la.index({Slice(), Slice(0, 5)}), lb.index({Slice(), Slice(0, 5)}),
                              1e-5, 1e-5));
  EXPECT_FALSE(torch::allclose(la.index({Slice(), Slice(6)}), lb.index({Slice(), Slice(6)})));
}

}  // namespace
}  // namespace tuneforge::engine
