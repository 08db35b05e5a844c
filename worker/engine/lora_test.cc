#include "worker/engine/lora.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <gtest/gtest.h>

#include "common/file_util.h"
#include "worker/engine/hf_model.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/test_examples.h"
#include "worker/engine/trainer.h"

namespace tuneforge::engine {
namespace {

std::string Dir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/lora-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

class Recorder : public TrainObserver {
 public:
  void OnMetrics(const StepMetrics& m) override { losses.push_back(m.loss); }
  bool ShouldStop() override { return stop_after > 0 && ++polls > stop_after; }
  std::vector<double> losses;
  int stop_after = 0;
  int polls = 0;
};

TrainConfig LoraConfig(const std::string& preset, const std::string& dir) {
  TrainConfig c;
  c.model = preset;
  c.epochs = 12;
  c.batch_size = 2;
  c.learning_rate = 1e-2;
  c.log_every_steps = 1;
  c.threads = 1;
  c.sample_count = 0;
  c.lora.rank = 4;
  c.lora.alpha = 8;
  c.output_dir = dir + "/out";
  return c;
}

torch::Tensor Logits(Transformer& model, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(torch::tensor(ids).unsqueeze(0))[0];  // (T, V)
}

class LoraTest : public ::testing::TestWithParam<std::string> {};

// Only adapters train: the base weights end bit-identical, the loss falls,
// and the merged export gives the logits of base + adapter, both here and in
// an independent Python merge written from PEFT's formulas.
TEST_P(LoraTest, TrainsAdaptersOnlyAndExportsMergedAndPeft) {
  const std::string preset = GetParam();
  const std::string dir = Dir("train-" + preset);
  Recorder r;
  TrainConfig c = LoraConfig(preset, dir);
  TrainResult result = Train(c, Memorisable(), {}, r);
  ASSERT_EQ(result.steps, 24);
  // Two steps make an epoch: the last epoch's loss is 0.4 nats below the first's.
  const size_t n = r.losses.size();
  EXPECT_LT(r.losses[n - 1] + r.losses[n - 2], r.losses[0] + r.losses[1] - 0.8);

  absl::StatusOr<ModelFolder> base = OpenModel(preset, c.seed);
  ASSERT_TRUE(base.ok()) << base.status();
  absl::StatusOr<ModelFolder> merged = LoadModelFolder(c.output_dir);
  ASSERT_TRUE(merged.ok()) << merged.status();
  // base + adapter, unmerged, equals the merged export.
  absl::StatusOr<ModelFolder> opened = OpenModel(preset, c.seed);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ModelFolder adapted = *std::move(opened);
  std::vector<std::string> names = EnableLora(adapted.model, c.lora);
  // PEFT's default targets: GPT-2's c_attn; Llama's q_proj and v_proj.
  EXPECT_EQ(names.size(), 4u * DefaultLoraTargets(base->model->config()).size());
  ASSERT_EQ(LoadAdapter(adapted.model, c.output_dir + "/adapter"), absl::OkStatus());
  const std::vector<int64_t> ids = {81, 58, 32, 108, 101, 97, 118, 101, 63, 32, 65, 58};
  torch::Tensor unmerged = Logits(adapted.model, ids);
  torch::Tensor from_export = Logits(merged->model, ids);
  EXPECT_LT((unmerged - from_export).abs().max().item<double>(), 1e-5);
  EXPECT_GT((from_export - Logits(base->model, ids)).abs().max().item<double>(), 1e-3)
      << "the adapter changed nothing";

  // The independent merge: the base folder plus PEFT's files.
  ASSERT_EQ(WritePreset(*FindPreset(preset), c.seed, dir + "/base"), absl::OkStatus());
  std::string csv;
  for (int64_t id : ids) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  const std::string out = dir + "/logits.bin";
  const std::string cmd = ReferencePython() + " " + std::string(TUNEFORGE_SOURCE_DIR) +
                          "/tests/peft_merge_reference.py " + dir + "/base " + c.output_dir +
                          "/adapter " + csv + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::string bytes;
  ASSERT_TRUE(ReadWholeFile(out, &bytes));
  ASSERT_EQ(bytes.size(), static_cast<size_t>(from_export.numel()) * sizeof(float));
  torch::Tensor reference = torch::from_blob(bytes.data(), from_export.sizes(), torch::kFloat32);
  EXPECT_LT((reference - from_export).abs().max().item<double>(), 1e-5);
}

// A LoRA run stopped in the middle resumes from its checkpoint (adapter and
// optimizer only) with the same per-step losses as an uninterrupted run.
TEST_P(LoraTest, ResumesExactly) {
  const std::string preset = GetParam();
  const std::string dir = Dir("resume-" + preset);
  TrainConfig c = LoraConfig(preset, dir);
  c.output_dir.clear();
  Recorder full;
  Train(c, Memorisable(), {}, full);
  c.checkpoint_dir = dir + "/checkpoints";
  c.checkpoint_every_steps = 3;
  Recorder cut;
  cut.stop_after = 11;  // eleven steps, then a stop: the newest checkpoint is step 10,
                        // an epoch end (two steps per epoch)
  TrainResult stopped = Train(c, Memorisable(), {}, cut);
  ASSERT_TRUE(stopped.stopped);
  ASSERT_TRUE(std::filesystem::exists(c.checkpoint_dir + "/step-00000010/adapter_model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(c.checkpoint_dir + "/step-00000010/model.safetensors"));
  c.resume = true;
  Recorder resumed;
  Train(c, Memorisable(), {}, resumed);
  ASSERT_EQ(resumed.losses.size(), full.losses.size() - 10);
  for (size_t i = 0; i < resumed.losses.size(); ++i) {
    EXPECT_NEAR(resumed.losses[i], full.losses[i + 10], 1e-6) << "step " << i + 11;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, LoraTest, ::testing::Values("tiny-gpt2", "tiny-llama"),
                         [](const auto& info) {
                           std::string name = info.param;
                           name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                           return name;
                         });

TEST(LoraOptionsTest, TargetsAreCheckedAndFrozenBaseIsUnchanged) {
  absl::StatusOr<ModelFolder> m = OpenModel("tiny-llama", 1);
  ASSERT_TRUE(m.ok()) << m.status();
  LoraOptions o;
  o.rank = 2;
  o.targets = {"q_proj", "nonexistent"};
  EXPECT_THROW(EnableLora(m->model, o), std::invalid_argument);
  absl::StatusOr<ModelFolder> fresh = OpenModel("tiny-llama", 1);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  const std::vector<int64_t> ids = {1, 2, 3, 4};
  torch::Tensor before = Logits(fresh->model, ids);
  o.targets = {"mlp.down_proj", "o_proj"};
  EXPECT_EQ(EnableLora(fresh->model, o).size(), 8u);
  EXPECT_TRUE(torch::equal(before, Logits(fresh->model, ids)));  // B starts at zero
  int64_t trainable = 0;
  for (const auto& p : fresh->model->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  // Per layer: o_proj 2 x (128 + 128) and down_proj 2 x (344 + 128).
  EXPECT_EQ(trainable, 4 * (2 * (128 + 128) + 2 * (344 + 128)));
}

}  // namespace
}  // namespace tuneforge::engine
