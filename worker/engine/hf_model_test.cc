#include "worker/engine/hf_model.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/test_examples.h"

namespace tuneforge::engine {
namespace {

ModelConfig Small(const std::string& type) {
  ModelConfig c;
  c.vocab_size = 50;
  c.context_length = 16;
  c.n_layer = 2;
  c.d_model = 32;
  c.n_head = c.n_kv_head = 2;
  c.head_dim = 16;
  c.d_ff = 128;
  c.eos_token_ids = {0};
  if (type == "gpt2") return c;
  c.architecture = Architecture::kLlama;
  c.model_type = type;
  c.n_head = 4;
  c.n_kv_head = 2;  // grouped-query attention
  c.head_dim = 8;
  c.d_ff = 56;
  c.norm_eps = 1e-6;
  c.rope_theta = 500.0;  // a small base: positions rotate visibly within 16 tokens
  c.tie_embeddings = false;
  c.qkv_bias = c.o_bias = false;
  if (type == "qwen2") {  // Q/K/V biases, a tied head, Llama 3.1 rope scaling
    c.qkv_bias = true;
    c.tie_embeddings = true;
    c.rope_factor = 4;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 2;
    c.rope_original_context = 8;
  }
  if (type == "mistral") c.sliding_window = 5;
  return c;
}

// What LoadHfModel says when it refuses `dir` ("" if it loads).
std::string Refusal(const std::string& dir) {
  return std::string(LoadHfModel(dir).status().message());
}

std::string Dir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/hf-model-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

class HfModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfModelTest, SaveThenLoadIsBitExact) {
  torch::manual_seed(11);
  Transformer model(Small(GetParam()));
  const std::string dir = Dir("roundtrip-" + GetParam());
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  absl::StatusOr<Transformer> loaded = LoadHfModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto a = model->named_parameters();
  auto b = (*loaded)->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
  torch::Tensor ids = torch::randint(0, 50, {2, 9}, torch::kInt64);
  EXPECT_TRUE(torch::equal(model->forward(ids), (*loaded)->forward(ids)));
}

// Logits equal those of an independent PyTorch implementation of HF's
// formulas reading the saved folder (tests/gpt2_reference.py and
// tests/llama_reference.py), within 1e-5.
TEST_P(HfModelTest, LogitsMatchAnIndependentReference) {
  torch::manual_seed(12);
  Transformer model(Small(GetParam()));
  model->eval();
  {
    // Weights large enough that every part of the block (the GELU's cubic
    // term, the norms' weights and biases) moves the logits well past the
    // tolerance.
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(p.dim() == 1 ? 0.5 : 0.0, 0.3);
  }
  const std::string dir = Dir("reference-" + GetParam());
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  const std::vector<int64_t> ids = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6};
  std::string csv;
  for (int64_t id : ids) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  const std::string out = dir + "/logits.bin";
  const std::string script = GetParam() == "gpt2" ? "gpt2_reference.py" : "llama_reference.py";
  const std::string cmd = ReferencePython() + " " + std::string(TUNEFORGE_SOURCE_DIR) + "/tests/" +
                          script + " " + dir + " " + csv + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::string bytes;
  ASSERT_TRUE(ReadWholeFile(out, &bytes));
  const int64_t T = static_cast<int64_t>(ids.size()), V = 50;
  ASSERT_EQ(bytes.size(), static_cast<size_t>(T * V) * sizeof(float));
  torch::Tensor reference = torch::from_blob(bytes.data(), {T, V}, torch::kFloat32);
  torch::NoGradGuard no_grad;
  torch::Tensor ours = model->forward(torch::tensor(ids).unsqueeze(0))[0];  // (T, V)
  const double max_diff = (ours - reference).abs().max().item<double>();
  EXPECT_LT(max_diff, 1e-5) << "largest logit " << reference.abs().max().item<double>();
  EXPECT_GT(reference.abs().max().item<double>(), 0.01);  // not a trivially zero output
}

// A checkpoint split into shards with model.safetensors.index.json, stored
// in bfloat16 as Hub checkpoints often are, loads to the same weights
// (rounded to bfloat16).
TEST_P(HfModelTest, LoadsBf16Shards) {
  torch::manual_seed(14);
  Transformer model(Small(GetParam()));
  const std::string dir = Dir("shards-" + GetParam());
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> shards[2];
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
        SafetensorsFile::Open(dir + "/model.safetensors");
    ASSERT_TRUE(opened.ok()) << opened.status();
    const SafetensorsFile* file = opened->get();
    int i = 0;
    for (const TensorInfo& t : file->header().tensors) {
      std::string_view data = file->Data(t);
      keep.push_back(torch::from_blob(const_cast<char*>(data.data()), t.shape, torch::kFloat32)
                         .to(torch::kBFloat16)
                         .contiguous());
      const int shard = i++ % 2;
      shards[shard].push_back({t.name, DType::kBF16, t.shape,
                               std::string_view(static_cast<const char*>(keep.back().data_ptr()),
                                                keep.back().numel() * 2)});
      index["weight_map"][t.name] = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
    }
  }
  std::filesystem::remove(dir + "/model.safetensors");
  for (int s = 0; s < 2; ++s) {
    ASSERT_EQ(WriteSafetensors(dir + "/model-0000" + std::to_string(s + 1) + "-of-00002.safetensors",
                               shards[s]), absl::OkStatus());
  }
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  absl::StatusOr<Transformer> loaded = LoadHfModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto b = (*loaded)->named_parameters();
  for (const auto& item : model->named_parameters()) {
    torch::Tensor rounded = item.value().to(torch::kBFloat16).to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(rounded, b[item.key()])) << item.key();
  }
}

INSTANTIATE_TEST_SUITE_P(Families, HfModelTest,
                         ::testing::Values("gpt2", "llama", "qwen2", "mistral"),
                         [](const auto& info) { return std::string(info.param); });

TEST(HfModelRefusalTest, NamesWhatItCannotLoad) {
  torch::manual_seed(13);
  Transformer model(Small("gpt2"));
  const std::string dir = Dir("refuse");
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  std::string error;
  // A config the loader does not support is named.
  std::ofstream(dir + "/config.json") << R"({"model_type": "phi3", "vocab_size": 50})";
  error = Refusal(dir);
  EXPECT_NE(error.find("model_type \"phi3\""), std::string::npos) << error;
  std::ofstream(dir + "/config.json")
      << R"({"model_type": "llama", "vocab_size": 50, "max_position_embeddings": 16,
             "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "rope_scaling": {"rope_type": "yarn", "factor": 4}})";
  error = Refusal(dir);
  EXPECT_NE(error.find("rope_scaling type \"yarn\""), std::string::npos) << error;
  // A shape that does not match the config names the tensor.
  const std::string gpt2 =
      R"("model_type": "gpt2", "n_positions": 16, "n_embd": 32, "n_head": 2, "n_inner": 128)";
  std::ofstream(dir + "/config.json") << "{" << gpt2 << R"(, "vocab_size": 50, "n_layer": 2})";
  ASSERT_EQ(LoadHfModel(dir).status(), absl::OkStatus());
  std::ofstream(dir + "/config.json") << "{" << gpt2 << R"(, "vocab_size": 51, "n_layer": 2})";
  error = Refusal(dir);
  EXPECT_NE(error.find("transformer.wte.weight: shape [50, 32], expected [51, 32]"),
            std::string::npos)
      << error;
  // A checkpoint with a layer too few is missing tensors; one too many has extras.
  std::ofstream(dir + "/config.json") << "{" << gpt2 << R"(, "vocab_size": 50, "n_layer": 3})";
  error = Refusal(dir);
  EXPECT_NE(error.find("missing tensor transformer.h.2."), std::string::npos) << error;
  std::ofstream(dir + "/config.json") << "{" << gpt2 << R"(, "vocab_size": 50, "n_layer": 1})";
  error = Refusal(dir);
  EXPECT_NE(error.find("unexpected tensor transformer.h.1."), std::string::npos) << error;
}

// The original GPT-2 checkpoints name their tensors without the
// "transformer." prefix ("h.0.attn.c_attn.weight"); they load the same.
TEST(HfModelTest, LoadsGpt2NamesWithoutThePrefix) {
  torch::manual_seed(16);
  Transformer model(Small("gpt2"));
  const std::string dir = Dir("bare");
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  std::vector<TensorToWrite> bare;
  {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
        SafetensorsFile::Open(dir + "/model.safetensors");
    ASSERT_TRUE(opened.ok()) << opened.status();
    const SafetensorsFile* file = opened->get();
    for (const TensorInfo& t : file->header().tensors) {
      ASSERT_EQ(t.name.rfind("transformer.", 0), 0u) << t.name;
      bare.push_back({t.name.substr(12), t.dtype, t.shape, file->Data(t)});
    }
    ASSERT_EQ(WriteSafetensors(dir + "/bare.safetensors", bare), absl::OkStatus());
  }
  std::filesystem::rename(dir + "/bare.safetensors", dir + "/model.safetensors");
  absl::StatusOr<Transformer> loaded = LoadHfModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto b = (*loaded)->named_parameters();
  for (const auto& item : model->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
}

TEST(HfModelRefusalTest, AnUntiedLlamaNeedsItsHead) {
  ModelConfig c = Small("llama");
  c.tie_embeddings = true;  // saved without lm_head.weight
  torch::manual_seed(15);
  Transformer model(c);
  const std::string dir = Dir("head");
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  c.tie_embeddings = false;
  std::ofstream(dir + "/config.json") << HfConfigJson(c);
  const std::string error = Refusal(dir);
  EXPECT_EQ(error, "missing tensor lm_head.weight");
}

// Every preset is written as a complete folder and loads through the same
// path as a Hub model; the tokenizer maps bytes to themselves.
TEST(PresetTest, EveryPresetIsAModelFolder) {
  for (const Preset& p : Presets()) {
    if (p.name.rfind("small-", 0) == 0) continue;  // 25M parameters: slow here, same code
    const std::string dir = Dir("preset-" + p.name);
    ASSERT_EQ(WritePreset(p, 42, dir), absl::OkStatus()) << p.name;
    absl::StatusOr<ModelFolder> m = LoadModelFolder(dir);
    ASSERT_TRUE(m.ok()) << p.name << ": " << m.status();
    EXPECT_EQ(m->model->ParameterCount(), ParameterCount(p.config)) << p.name;
    EXPECT_EQ(m->stop_ids, std::vector<int64_t>{256});
    EXPECT_EQ(m->pad_id, 257);
    const std::string text = "Grüße, 世界! <|endoftext|>\n\t  x";
    std::vector<int64_t> ids = m->tokenizer->Encode(text);
    ASSERT_EQ(ids.size(), text.size());
    for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(text[i]));
    EXPECT_EQ(m->tokenizer->Decode(ids), text);
    EXPECT_EQ(m->tokenizer->EncodeWithAddedTokens("a<|endoftext|>").back(), 256);
    // The same seed gives the same weights; another seed others.
    absl::StatusOr<ModelFolder> again = OpenModel(p.name, 42);
    absl::StatusOr<ModelFolder> other = OpenModel(p.name, 43);
    ASSERT_TRUE(again.ok() && other.ok()) << again.status() << other.status();
    torch::Tensor ids_t = torch::tensor(std::vector<int64_t>{1, 2, 3}).unsqueeze(0);
    EXPECT_TRUE(torch::equal(m->model->forward(ids_t), again->model->forward(ids_t)));
    EXPECT_FALSE(torch::equal(m->model->forward(ids_t), other->model->forward(ids_t)));
  }
}

}  // namespace
}  // namespace tuneforge::engine
