#include "worker/engine/trainer.h"

#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/engine/hf_model.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/test_examples.h"

namespace tuneforge::engine {
namespace {

class Recorder : public TrainObserver {
 public:
  void OnStart(const TrainPlan& p) override { plan = p; }
  void OnMetrics(const StepMetrics& m) override { metrics.push_back(m); }
  void OnEvaluation(const EvalMetrics& m) override { evals.push_back(m); }
  void OnSample(const std::string& prompt, const std::string& completion,
                int64_t step) override {
    samples.push_back(completion);
    sample_prompts.push_back(prompt);
  }
  bool ShouldStop() override { return stop_after > 0 && ++polls > stop_after; }

  TrainPlan plan;
  std::vector<StepMetrics> metrics;
  std::vector<EvalMetrics> evals;
  std::vector<std::string> samples;
  std::vector<std::string> sample_prompts;
  int stop_after = 0;
  int polls = 0;
};

TrainConfig FastConfig() {
  TrainConfig c;
  c.epochs = 30;
  c.batch_size = 4;
  c.learning_rate = 3e-3;
  c.log_every_steps = 1;
  c.threads = 1;
  c.sample_count = 1;
  c.sample_max_tokens = 20;
  return c;
}

TEST(TrainerTest, LossFallsWhenMemorisingASmallSet) {
  Recorder r;
  TrainResult result = Train(FastConfig(), Memorisable(), Memorisable(), r);
  ASSERT_EQ(r.metrics.size(), 30u);
  EXPECT_EQ(r.plan.total_steps, 30);
  EXPECT_EQ(r.plan.steps_per_epoch, 1);
  EXPECT_GT(r.metrics.front().loss, 5.0);  // ~ln(258) = 5.55 at random init
  EXPECT_LT(r.metrics.back().loss, 0.5 * r.metrics.front().loss);
  ASSERT_EQ(r.evals.size(), 30u);
  EXPECT_LT(r.evals.back().loss, r.evals.front().loss);
  EXPECT_GT(r.evals.back().token_accuracy, r.evals.front().token_accuracy);
  EXPECT_EQ(result.steps, 30);
  EXPECT_FALSE(result.stopped);
  EXPECT_EQ(r.samples.size(), 30u);
}

TEST(TrainerTest, TinyLlamaLearnsToo) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.model = "tiny-llama";
  c.epochs = 20;
  Train(c, Memorisable(), Memorisable(), r);
  EXPECT_GT(r.metrics.front().loss, 5.0);
  EXPECT_LT(r.metrics.back().loss, 0.5 * r.metrics.front().loss);
  EXPECT_EQ(r.plan.parameter_count, ParameterCount(FindPreset("tiny-llama")->config));
}

// A folder whose tokenizer has merges: examples become fewer tokens than
// bytes, and the model still learns them.
TEST(TrainerTest, TrainsWithAMergingTokenizer) {
  const std::string dir = ::testing::TempDir() + "/bpe-model-" + std::to_string(::getpid());
  ModelConfig c = FindPreset("tiny-llama")->config;
  c.vocab_size = 270;
  torch::manual_seed(3);
  Transformer model(c);
  ASSERT_EQ(SaveHfModel(model, dir), "");
  nlohmann::json t = nlohmann::json::parse(
      ByteLevelTokenizerJson(BpeTokenizer::kLlama3Pattern, {"<|endoftext|>", "<|pad|>"}));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"\u0120", "d"}, {"a", "y"}, {"\u0120d", "ay"}, {"\u0120", "t"}, {"h", "e"},
      {"\u0120t", "he"}, {"\u0120", "a"}, {"\u0120", "w"}, {"e", "e"}, {"\u0120w", "ee"}};
  int64_t next_id = 258;
  for (const auto& [left, right] : merges) {
    t["model"]["merges"].push_back(left + " " + right);
    t["model"]["vocab"][left + right] = next_id++;
  }
  std::ofstream(dir + "/tokenizer.json") << t.dump();
  Recorder bytes, merged;
  TrainConfig config = FastConfig();
  config.epochs = 20;
  config.model = "tiny-llama";
  Train(config, Memorisable(), {}, bytes);
  config.model = dir;
  Train(config, Memorisable(), {}, merged);
  EXPECT_LT(merged.metrics.back().tokens_seen, bytes.metrics.back().tokens_seen);
  EXPECT_LT(merged.metrics.back().loss, 0.5 * merged.metrics.front().loss);
}

TEST(TrainerTest, DeterministicForASeed) {
  Recorder a, b;
  TrainConfig c = FastConfig();
  c.epochs = 3;
  Train(c, Memorisable(), {}, a);
  Train(c, Memorisable(), {}, b);
  ASSERT_EQ(a.metrics.size(), b.metrics.size());
  for (size_t i = 0; i < a.metrics.size(); ++i) {
    EXPECT_EQ(a.metrics[i].loss, b.metrics[i].loss) << "step " << i + 1;
  }
}

TEST(TrainerTest, StopsWhenAsked) {
  Recorder r;
  r.stop_after = 2;
  TrainResult result = Train(FastConfig(), Memorisable(), {}, r);
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(result.steps, 2);
}

TEST(TrainerTest, GradientAccumulationCountsSteps) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 2;
  c.batch_size = 1;
  c.gradient_accumulation_steps = 3;  // 4 micro-batches -> 2 steps per epoch
  Train(c, Memorisable(), {}, r);
  EXPECT_EQ(r.plan.steps_per_epoch, 2);
  EXPECT_EQ(r.metrics.back().step, 4);
}

TEST(TrainerTest, TruncatesAndCounts) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 1;
  c.max_seq_len = 12;
  Train(c, Memorisable(), {}, r);
  EXPECT_EQ(r.plan.truncated_examples, 4);
}

TEST(TrainerTest, LongDocumentsBecomeSeveralSequences) {
  Example doc;
  doc.format = DatasetFormat::kText;
  doc.text = std::string(100, 'a');  // 101 tokens with end-of-text
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 1;
  c.max_seq_len = 32;
  c.batch_size = 1;
  Train(c, {doc}, {}, r);
  EXPECT_EQ(r.plan.truncated_examples, 0);
  EXPECT_EQ(r.plan.train_sequences, 4);  // windows of 32 inputs over 100 predictions
  EXPECT_EQ(r.plan.steps_per_epoch, 4);
}

TEST(TrainerTest, ChatTrainsAndSamplesFromTheConversation) {
  Example chat;
  chat.format = DatasetFormat::kChat;
  chat.messages = {{"user", "Leave?", true}, {"assistant", "25 days.", true}};
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 2;
  Train(c, {chat, chat}, {chat}, r);
  ASSERT_EQ(r.samples.size(), 2u);
  EXPECT_EQ(r.sample_prompts[0], "user: Leave?\nassistant: ");
  EXPECT_EQ(r.evals.size(), 2u);
  EXPECT_GT(r.evals.back().loss, 0);
}

TEST(TrainerTest, SavesTheTrainedModelAsAnHfFolder) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 15;
  c.output_dir = ::testing::TempDir() + "/trained-" + std::to_string(::getpid());
  Train(c, Memorisable(), Memorisable(), r);
  std::string error;
  std::optional<ModelFolder> loaded = LoadModelFolder(c.output_dir, &error);
  ASSERT_TRUE(loaded) << error;
  EXPECT_EQ(loaded->model->config().d_model, 128);
  // It continues training from there (continued fine-tuning), and its loss
  // on the data starts where the first run ended, not at a fresh model's.
  TrainConfig fresh = c;
  fresh.output_dir.clear();
  int64_t truncated = 0;
  const double before = EvaluateModel(fresh, Memorisable(), &truncated).loss;
  TrainConfig continued = fresh;
  continued.model = c.output_dir;
  const double after = EvaluateModel(continued, Memorisable(), &truncated).loss;
  EXPECT_LT(after, before - 0.5);
  EXPECT_NEAR(after, r.evals.back().loss, 1e-4);
  Recorder r2;
  continued.epochs = 1;
  Train(continued, Memorisable(), Memorisable(), r2);
  EXPECT_LT(r2.metrics.front().loss, r.metrics.front().loss - 0.5);
}

TEST(TrainerTest, RejectsBadConfig) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.learning_rate = 0;
  EXPECT_THROW(Train(c, Memorisable(), {}, r), std::invalid_argument);
  EXPECT_THROW(Train(FastConfig(), {}, {}, r), std::invalid_argument);
  EXPECT_EQ(CheckConfig(FastConfig()), "");
}

}  // namespace
}  // namespace tuneforge::engine
