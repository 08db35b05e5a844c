#include "worker/engine/gpt.h"

#include <gtest/gtest.h>

namespace tuneforge::engine {
namespace {

GptConfig SmallConfig() {
  GptConfig c;
  c.context_length = 32;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 32;
  return c;
}

TEST(GptTest, OutputShape) {
  torch::manual_seed(1);
  Gpt model(SmallConfig());
  torch::Tensor ids = torch::randint(0, 256, {3, 17}, torch::kInt64);  // (B, T)
  torch::Tensor logits = model->forward(ids);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 17, 258}));
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
}

TEST(GptTest, TinyPresetSize) {
  torch::manual_seed(1);
  Gpt model(*PresetConfig("tiny-gpt"));
  // wte 258*128 + wpe 256*128 + 4 blocks * (12*128^2 + 13*128) + ln_f 2*128.
  EXPECT_EQ(model->ParameterCount(), 258 * 128 + 256 * 128 + 4 * (12 * 128 * 128 + 13 * 128) +
                                         2 * 128);
  EXPECT_EQ(model->ParameterCount(), ParameterCount(*PresetConfig("tiny-gpt")));
}

TEST(GptTest, EveryPresetCountsItsParameters) {
  for (const Preset& p : Presets()) {
    Gpt model(p.config);
    EXPECT_EQ(model->ParameterCount(), ParameterCount(p.config)) << p.name;
  }
}

TEST(GptTest, SameSeedSameWeights) {
  torch::manual_seed(7);
  Gpt a(SmallConfig());
  torch::manual_seed(7);
  Gpt b(SmallConfig());
  torch::Tensor ids = torch::randint(0, 256, {1, 9}, torch::kInt64);
  EXPECT_TRUE(torch::equal(a->forward(ids), b->forward(ids)));
}

TEST(GptTest, Causality) {
  torch::manual_seed(3);
  Gpt model(SmallConfig());
  model->eval();
  torch::Tensor ids = torch::randint(0, 256, {2, 20}, torch::kInt64);  // (B, T)
  torch::Tensor changed = ids.clone();
  changed.index_put_({torch::indexing::Slice(), 12}, (ids.index({torch::indexing::Slice(), 12}) + 1) % 256);
  torch::Tensor a = model->forward(ids);      // (B, T, V)
  torch::Tensor b = model->forward(changed);  // (B, T, V)
  using torch::indexing::Slice;
  // Positions before the change see the same logits, bit for bit ...
  EXPECT_TRUE(torch::equal(a.index({Slice(), Slice(0, 12)}), b.index({Slice(), Slice(0, 12)})));
  // ... and the changed position onwards do not.
  EXPECT_FALSE(torch::allclose(a.index({Slice(), Slice(12)}), b.index({Slice(), Slice(12)})));
}

TEST(GptTest, CachedDecodingGivesTheSameLogits) {
  torch::manual_seed(5);
  Gpt model(SmallConfig());
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 256, {1, 12}, torch::kInt64);  // (1, T)
  torch::Tensor full = model->forward(ids);                           // (1, T, V)
  KvCache cache;
  using torch::indexing::Slice;
  torch::Tensor prefill = model->forward(ids.index({Slice(), Slice(0, 7)}), &cache);  // 7 at once
  EXPECT_TRUE(torch::allclose(prefill, full.index({Slice(), Slice(0, 7)}), 1e-5, 1e-5));
  for (int64_t t = 7; t < 12; ++t) {  // then one position at a time
    torch::Tensor step = model->forward(ids.index({Slice(), Slice(t, t + 1)}), &cache);
    EXPECT_TRUE(torch::allclose(step[0][0], full[0][t], 1e-5, 1e-5)) << "position " << t;
  }
  EXPECT_EQ(cache.length, 12);
}

TEST(GptTest, GenerationWithTheCacheEqualsWithout) {
  torch::manual_seed(6);
  Gpt model(SmallConfig());
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
  greedy.stop_token = Generate(model, prompt, greedy)[0];
  EXPECT_TRUE(Generate(model, prompt, greedy).empty());
}

TEST(GptTest, RefusesTooLongSequence) {
  Gpt model(SmallConfig());
  EXPECT_THROW(model->forward(torch::zeros({1, 33}, torch::kInt64)), c10::Error);
}

}  // namespace
}  // namespace tuneforge::engine
