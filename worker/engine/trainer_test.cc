#include "worker/engine/trainer.h"

#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "text/bpe_tokenizer.h"
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
  EXPECT_LT(r.evals.back().validation_loss, r.evals.front().validation_loss);
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
  ASSERT_EQ(SaveHfModel(model, dir), absl::OkStatus());
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
  EXPECT_GT(r.evals.back().validation_loss, 0);
}

TEST(TrainerTest, SavesTheTrainedModelAsAnHfFolder) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 15;
  c.output_dir = ::testing::TempDir() + "/trained-" + std::to_string(::getpid());
  Train(c, Memorisable(), Memorisable(), r);
  absl::StatusOr<ModelFolder> loaded = LoadModelFolder(c.output_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->model->config().d_model, 128);
  // It continues training from there (continued fine-tuning), and its loss
  // on the data starts where the first run ended, not at a fresh model's.
  TrainConfig fresh = c;
  fresh.output_dir.clear();
  int64_t truncated = 0;
  const double before = EvaluateModel(fresh, Memorisable(), &truncated).validation_loss;
  TrainConfig continued = fresh;
  continued.model = c.output_dir;
  const double after = EvaluateModel(continued, Memorisable(), &truncated).validation_loss;
  EXPECT_LT(after, before - 0.5);
  EXPECT_NEAR(after, r.evals.back().validation_loss, 1e-4);
  Recorder r2;
  continued.epochs = 1;
  Train(continued, Memorisable(), Memorisable(), r2);
  EXPECT_LT(r2.metrics.front().loss, r.metrics.front().loss - 0.5);
}

// A tiny-gpt2 folder whose byte-level tokenizer also has ChatML's tokens.
std::string ChatMlModel() {
  const std::string dir = ::testing::TempDir() + "/chatml-model-" + std::to_string(::getpid());
  ModelConfig c = FindPreset("tiny-gpt2")->config;
  c.vocab_size = 260;
  torch::manual_seed(5);
  Transformer model(c);
  EXPECT_EQ(SaveHfModel(model, dir), absl::OkStatus());
  std::ofstream(dir + "/tokenizer.json") << ByteLevelTokenizerJson(
      BpeTokenizer::kGpt2Pattern, {"<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"});
  return dir;
}

Example Chat(std::string question, std::string answer) {
  Example e;
  e.format = DatasetFormat::kChat;
  e.messages = {{"user", std::move(question), true}, {"assistant", std::move(answer), true}};
  return e;
}

// The model's tokenizer has ChatML's tokens, so chats are written in ChatML:
// the model learns to answer and to end its turn with <|im_end|>, where the
// sample stops.
TEST(TrainerTest, ChatMlTemplateTrainsTurnsThatEnd) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.model = ChatMlModel();
  c.epochs = 40;
  const std::vector<Example> chats = {Chat("Leave?", "25 days."), Chat("Pay day?", "Friday.")};
  Train(c, chats, {chats[0]}, r);
  EXPECT_EQ(r.plan.chat_template, "chatml");
  EXPECT_EQ(r.sample_prompts.back(), "<|im_start|>user\nLeave?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(r.samples.back(), "25 days.");
  // Plain by name: the same chats as "user: ...", and a model that has not
  // learned ChatML's end of turn.
  Recorder plain;
  c.chat_template = "plain";
  c.epochs = 1;
  Train(c, chats, {chats[0]}, plain);
  EXPECT_EQ(plain.plan.chat_template, "plain");
  EXPECT_EQ(plain.sample_prompts.back(), "user: Leave?\nassistant: ");
}

// A template marker typed by a user is text, not the special token: it
// costs its bytes' tokens.
TEST(TrainerTest, TemplateMarkersInUserTextStayText) {
  TrainConfig c = FastConfig();
  c.model = ChatMlModel();
  c.epochs = 1;
  Recorder marker, letters;
  Train(c, {Chat("<|im_end|>", "ok")}, {}, marker);
  Train(c, {Chat("0123456789", "ok")}, {}, letters);  // as many bytes
  EXPECT_EQ(marker.metrics.back().tokens_seen, letters.metrics.back().tokens_seen);
}

TEST(TrainerTest, NamedTemplateNeedsItsTokens) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.chat_template = "llama3";
  try {
    Train(c, {Chat("Leave?", "25 days.")}, {}, r);
    FAIL() << "tiny-gpt2's tokenizer has no <|eot_id|>";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("<|eot_id|>"), std::string::npos) << e.what();
  }
}

// Packing all four examples into one row computes the same loss and the same
// update as a batch of the four padded: nothing attends across examples.
TEST(TrainerTest, PackedRowTrainsLikeSeparateSequences) {
  TrainConfig c = FastConfig();
  c.epochs = 1;
  c.max_seq_len = 128;
  Recorder padded, packed;
  Train(c, Memorisable(), Memorisable(), padded);
  c.packing = true;
  Train(c, Memorisable(), Memorisable(), packed);
  EXPECT_EQ(packed.plan.packed_rows, 1);
  EXPECT_EQ(packed.plan.train_sequences, 4);
  ASSERT_EQ(packed.metrics.size(), 1u);
  EXPECT_NEAR(packed.metrics[0].loss, padded.metrics[0].loss, 1e-5);
  EXPECT_NEAR(packed.evals[0].validation_loss, padded.evals[0].validation_loss, 1e-5);
}

TEST(TrainerTest, PackingFillsRowsAndLearns) {
  std::vector<Example> examples;
  for (int i = 0; i < 6; ++i) {
    for (const Example& e : Memorisable()) examples.push_back(e);
  }
  TrainConfig c = FastConfig();
  c.epochs = 10;
  c.max_seq_len = 64;  // about two examples per row
  c.packing = true;
  Recorder r;
  Train(c, examples, Memorisable(), r);
  EXPECT_EQ(r.plan.train_sequences, 24);
  EXPECT_GE(r.plan.packed_rows, 9);
  EXPECT_LE(r.plan.packed_rows, 14);
  EXPECT_EQ(r.plan.steps_per_epoch, (r.plan.packed_rows + 3) / 4);
  EXPECT_LT(r.evals.back().validation_loss, 0.5 * r.evals.front().validation_loss);
}

// Grouping by length changes which sequences share a batch, not what an
// epoch covers.
TEST(TrainerTest, GroupingByLengthCoversTheSameTokens) {
  std::vector<Example> examples;
  for (int i = 1; i <= 40; ++i) examples.push_back(Pair("Q" + std::string(i, '?'), std::string(i % 7 + 1, 'a')));
  TrainConfig c = FastConfig();
  c.epochs = 2;
  Recorder grouped, shuffled;
  Train(c, examples, {}, grouped);
  c.group_by_length = false;
  Train(c, examples, {}, shuffled);
  EXPECT_EQ(grouped.plan.steps_per_epoch, shuffled.plan.steps_per_epoch);
  EXPECT_EQ(grouped.metrics.back().tokens_seen, shuffled.metrics.back().tokens_seen);
  EXPECT_NE(grouped.metrics[0].loss, shuffled.metrics[0].loss);
}

TEST(TrainerTest, DivergingLossStopsTheRun) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.learning_rate = 0.5;
  c.grad_clip = 0;
  try {
    Train(c, Memorisable(), {}, r);
    FAIL() << "a learning rate of 0.5 without clipping should diverge";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("diverged at step"), std::string::npos) << e.what();
  }
  // The same run with the guard off goes on.
  Recorder unguarded;
  c.divergence_factor = 0;
  c.epochs = 5;
  EXPECT_NO_THROW(Train(c, Memorisable(), {}, unguarded));
}

TEST(TrainerTest, WarmupRatioSetsTheWarmupSteps) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.epochs = 10;
  c.warmup_ratio = 0.25;  // of 10 steps: 3
  Train(c, Memorisable(), {}, r);
  EXPECT_EQ(r.plan.warmup_steps, 3);
  EXPECT_DOUBLE_EQ(r.metrics[0].learning_rate, c.learning_rate / 3);
  EXPECT_DOUBLE_EQ(r.metrics[2].learning_rate, c.learning_rate);
  EXPECT_DOUBLE_EQ(r.metrics[3].learning_rate, c.learning_rate);  // the decay starts at the peak
  EXPECT_LT(r.metrics[4].learning_rate, c.learning_rate);
}

TEST(TrainerTest, Bf16AndRecomputationTrain) {
  TrainConfig c = FastConfig();
  c.epochs = 3;
  Recorder fp32, recomputed, bf16;
  Train(c, Memorisable(), {}, fp32);
  c.recompute_activations = true;
  Train(c, Memorisable(), {}, recomputed);
  for (size_t i = 0; i < fp32.metrics.size(); ++i) {
    EXPECT_NEAR(recomputed.metrics[i].loss, fp32.metrics[i].loss, 1e-5) << "step " << i + 1;
  }
  c.recompute_activations = false;
  c.precision = "bf16";
  c.epochs = 20;
  Train(c, Memorisable(), {}, bf16);
  EXPECT_EQ(bf16.plan.precision, "bf16");
  EXPECT_EQ(fp32.plan.precision, "fp32");  // auto on the CPU
  EXPECT_NEAR(bf16.metrics[0].loss, fp32.metrics[0].loss, 0.05);
  EXPECT_LT(bf16.metrics.back().loss, 0.5 * bf16.metrics.front().loss);
}

TEST(TrainerTest, CudaWhereThereIsNone) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has a GPU";
  Recorder r;
  TrainConfig c = FastConfig();
  c.device = "cuda";
  EXPECT_THROW(Train(c, Memorisable(), {}, r), std::invalid_argument);
  c.device = "auto";
  c.epochs = 1;
  Train(c, Memorisable(), {}, r);
  EXPECT_EQ(r.plan.device, "cpu");
}

TEST(TrainerTest, RejectsBadConfig) {
  Recorder r;
  TrainConfig c = FastConfig();
  c.learning_rate = 0;
  EXPECT_THROW(Train(c, Memorisable(), {}, r), std::invalid_argument);
  EXPECT_THROW(Train(FastConfig(), {}, {}, r), std::invalid_argument);
  EXPECT_EQ(CheckConfig(FastConfig()), absl::OkStatus());
  c = FastConfig();
  c.chat_template = "vicuna";
  EXPECT_NE(CheckConfig(c).message().find("chat_template"), std::string::npos);
  c = FastConfig();
  c.warmup_ratio = 1;
  EXPECT_NE(CheckConfig(c).message().find("warmup_ratio"), std::string::npos);
  c = FastConfig();
  c.precision = "fp16";
  EXPECT_NE(CheckConfig(c).message().find("precision"), std::string::npos);
  c = FastConfig();
  c.divergence_factor = 1;
  EXPECT_NE(CheckConfig(c).message().find("divergence_factor"), std::string::npos);
}

}  // namespace
}  // namespace tuneforge::engine
