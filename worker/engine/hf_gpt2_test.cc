#include "worker/engine/hf_gpt2.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/file_util.h"

namespace tuneforge::engine {
namespace {

GptConfig Small() {
  GptConfig c;
  c.vocab_size = 50;
  c.context_length = 16;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 32;
  return c;
}

std::string Dir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/hf-gpt2-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(HfGpt2Test, SaveThenLoadIsBitExact) {
  torch::manual_seed(11);
  Gpt model(Small());
  const std::string dir = Dir("roundtrip");
  ASSERT_EQ(SaveHfGpt2(model, dir), "");
  std::string error;
  std::optional<Gpt> loaded = LoadHfGpt2(dir, &error);
  ASSERT_TRUE(loaded) << error;
  auto a = model->named_parameters();
  auto b = (*loaded)->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
  torch::Tensor ids = torch::randint(0, 50, {2, 9}, torch::kInt64);
  EXPECT_TRUE(torch::equal(model->forward(ids), (*loaded)->forward(ids)));
}

// Logits equal those of an independent PyTorch implementation of HF's GPT-2
// formulas reading the saved folder (tests/gpt2_reference.py).
TEST(HfGpt2Test, LogitsMatchAnIndependentReference) {
  torch::manual_seed(12);
  Gpt model(Small());
  model->eval();
  {
    // Weights large enough that every part of the block (the GELU's cubic
    // term, the layer norms' biases) moves the logits well past the tolerance.
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(p.dim() == 1 ? 0.5 : 0.0, 0.3);
  }
  const std::string dir = Dir("reference");
  ASSERT_EQ(SaveHfGpt2(model, dir), "");
  const std::vector<int64_t> ids = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3};
  std::string csv;
  for (int64_t id : ids) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  const std::string out = dir + "/logits.bin";
  const std::string cmd = "/usr/bin/python3 " + std::string(TUNEFORGE_SOURCE_DIR) +
                          "/tests/gpt2_reference.py " + dir + " " + csv + " " + out;
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

TEST(HfGpt2Test, RefusesWhatItCannotLoad) {
  torch::manual_seed(13);
  Gpt model(Small());
  const std::string dir = Dir("refuse");
  ASSERT_EQ(SaveHfGpt2(model, dir), "");
  std::string error;
  // A config the loader does not support is named.
  std::ofstream(dir + "/config.json") << R"({"model_type": "llama", "vocab_size": 50})";
  EXPECT_FALSE(LoadHfGpt2(dir, &error));
  EXPECT_NE(error.find("model_type \"llama\""), std::string::npos) << error;
  // A shape that does not match the config names the tensor.
  ASSERT_EQ(SaveHfGpt2(model, dir), "");
  std::ofstream(dir + "/config.json")
      << R"({"model_type": "gpt2", "vocab_size": 50, "n_positions": 16, "n_embd": 32,
             "n_layer": 2, "n_head": 2, "activation_function": "gelu_new"})";
  ASSERT_TRUE(LoadHfGpt2(dir, &error)) << error;
  std::ofstream(dir + "/config.json")
      << R"({"model_type": "gpt2", "vocab_size": 51, "n_positions": 16, "n_embd": 32,
             "n_layer": 2, "n_head": 2})";
  EXPECT_FALSE(LoadHfGpt2(dir, &error));
  EXPECT_NE(error.find("wte.weight: shape [50, 32], expected [51, 32]"), std::string::npos)
      << error;
  // A checkpoint with a layer too few is missing tensors; one too many has extras.
  std::ofstream(dir + "/config.json")
      << R"({"model_type": "gpt2", "vocab_size": 50, "n_positions": 16, "n_embd": 32,
             "n_layer": 3, "n_head": 2})";
  EXPECT_FALSE(LoadHfGpt2(dir, &error));
  EXPECT_NE(error.find("missing tensor h.2."), std::string::npos) << error;
  std::ofstream(dir + "/config.json")
      << R"({"model_type": "gpt2", "vocab_size": 50, "n_positions": 16, "n_embd": 32,
             "n_layer": 1, "n_head": 2})";
  EXPECT_FALSE(LoadHfGpt2(dir, &error));
  EXPECT_NE(error.find("unexpected tensor h.1."), std::string::npos) << error;
}

}  // namespace
}  // namespace tuneforge::engine
