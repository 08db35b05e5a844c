#include "common/model_config.h"

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

// The config.json files of models users bring, as the Hub ships them
// (abridged to the keys that matter), with their published parameter counts.
constexpr const char* kGpt2 = R"({
  "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
  "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
  "resid_pdrop": 0.1, "vocab_size": 50257})";

constexpr const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 128256})";

constexpr const char* kQwen2 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
  "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 131072,
  "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
  "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

constexpr const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 32000})";

ModelConfig Parse(const char* text) {
  absl::StatusOr<ModelConfig> c = ParseHfConfig(text);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.value_or(ModelConfig());
}

TEST(ModelConfigTest, ReadsGpt2) {
  ModelConfig c = Parse(kGpt2);
  EXPECT_EQ(c.architecture, Architecture::kGpt2);
  EXPECT_EQ(c.context_length, 1024);
  EXPECT_EQ(c.d_ff, 3072);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{50256});
  EXPECT_EQ(ParameterCount(c), 124439808);  // GPT-2 small
}

TEST(ModelConfigTest, ReadsLlama32WithRopeScaling) {
  ModelConfig c = Parse(kLlama32);
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.n_kv_head, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope_factor, 32.0);
  EXPECT_EQ(c.rope_original_context, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(ParameterCount(c), 1235814400);  // Llama 3.2 1B
}

TEST(ModelConfigTest, ReadsQwen2WithItsBiases) {
  ModelConfig c = Parse(kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window false
  EXPECT_EQ(ParameterCount(c), 494032768);  // Qwen2-0.5B
}

TEST(ModelConfigTest, ReadsMistralsSlidingWindow) {
  ModelConfig c = Parse(kMistral);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(MaxSequenceLength(c), 4096);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(ParameterCount(c), 7241732096);  // Mistral 7B
}

TEST(ModelConfigTest, WrittenConfigReadsBackTheSame) {
  for (const char* text : {kGpt2, kLlama32, kQwen2, kMistral}) {
    ModelConfig a = Parse(text);
    ModelConfig b = Parse(HfConfigJson(a).c_str());
    EXPECT_EQ(b.model_type, a.model_type);
    EXPECT_EQ(ParameterCount(b), ParameterCount(a)) << a.model_type;
    EXPECT_EQ(b.rope_factor, a.rope_factor);
    EXPECT_EQ(b.rope_theta, a.rope_theta);
    EXPECT_EQ(b.norm_eps, a.norm_eps);
    EXPECT_EQ(b.qkv_bias, a.qkv_bias);
    EXPECT_EQ(b.o_bias, a.o_bias);
    EXPECT_EQ(b.sliding_window, a.sliding_window);
    EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
    EXPECT_EQ(b.bos_token_id, a.bos_token_id);
  }
  for (const Preset& p : Presets()) {
    ModelConfig b = Parse(HfConfigJson(p.config).c_str());
    EXPECT_EQ(ParameterCount(b), ParameterCount(p.config)) << p.name;
  }
}

TEST(ModelConfigTest, ModelFileNames) {
  for (const char* ok : {"config.json", "model.safetensors", "model-00001-of-00004.safetensors",
                         "model.safetensors.index.json", "tokenizer.json", "merges.txt"}) {
    EXPECT_TRUE(IsModelFileName(ok)) << ok;
  }
  for (const char* bad : {"", "../config.json", "sub/config.json", "pytorch_model.bin",
                          "model-0001-of-00004.safetensors", "model-00001-of-00004.safetensor",
                          "model-0000a-of-00004.safetensors", "README.md", ".complete"}) {
    EXPECT_FALSE(IsModelFileName(bad)) << bad;
  }
}

TEST(ModelConfigTest, LoraTargetsMatchAsPeftDoes) {
  for (const char* ok : {"q_proj", "self_attn.o_proj", "down_proj", "mlp.up_proj"}) {
    EXPECT_TRUE(IsLoraTarget("llama", ok)) << ok;
  }
  for (const char* ok : {"c_attn", "c_proj", "mlp.c_proj", "attn.c_proj", "c_fc"}) {
    EXPECT_TRUE(IsLoraTarget("gpt2", ok)) << ok;
  }
  for (const char* bad : {"c_attn", "proj", "_proj", "attn.q_proj", ""}) {
    EXPECT_FALSE(IsLoraTarget("llama", bad)) << bad;
  }
  EXPECT_FALSE(IsLoraTarget("gpt2", "q_proj"));
}

TEST(ModelConfigTest, NamesWhatIsUnsupported) {
  struct Case {
    std::string text, error;
  };
  const std::vector<Case> cases = {
      {"[1, 2]", "not a JSON object"},
      {"{\"model_type\": \"phi3\"}", "unsupported model_type \"phi3\""},
      {"{\"model_type\": \"gpt2\"}", "unsupported vocab_size is missing"},
      {R"({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2,
           "activation_function": "relu"})",
       "unsupported activation_function \"relu\""},
      {R"({"model_type": "llama", "vocab_size": 10, "max_position_embeddings": 8,
           "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
           "num_attention_heads": 4, "num_key_value_heads": 3})",
       "num_key_value_heads"},
      {R"({"model_type": "llama", "vocab_size": 10, "max_position_embeddings": 8,
           "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
           "num_attention_heads": 2, "mlp_bias": true})",
       "unsupported mlp_bias true"},
      {R"({"model_type": "llama", "vocab_size": 10, "max_position_embeddings": 8,
           "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
           "num_attention_heads": 2, "eos_token_id": 10})",
       "eos_token_id 10 is outside the vocabulary"},
      {R"({"model_type": "llama", "vocab_size": 10, "max_position_embeddings": 8,
           "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 100000,
           "num_attention_heads": 2})",
       "out of range"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ModelConfig> parsed = ParseHfConfig(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.error), std::string::npos) << parsed.status();
  }
}

}  // namespace
}  // namespace tuneforge
