// Exact resume: a real tuneforge-train process killed with SIGKILL in the
// middle of an epoch, then resumed from its newest checkpoint, reports the
// same per-step losses and evaluations as a run that was never interrupted,
// and ends with the same weights.
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "common/file_util.h"
#include "tests/process.h"

namespace tuneforge::testing {
namespace {

TEST(ResumeTest, AKilledRunResumesWithTheSameLosses) {
  const std::string dir = FreshDir("resume");
  const std::string data = std::string(TUNEFORGE_SOURCE_DIR) + "/examples/hr.json";
  auto args = [&](const std::string& name) {
    return std::vector<std::string>{
        "--data", data, "--model", "tiny-llama", "--epochs", "2", "--learning-rate", "3e-3",
        "--log-every", "1", "--eval-every", "7", "--threads", "1",
        "--checkpoint-dir", dir + "/" + name + "-checkpoints", "--checkpoint-every", "5",
        "--metrics-csv", dir + "/" + name + ".csv", "--output", dir + "/" + name + "-model"};
  };
  RunResult full = testing::Run("tuneforge-train", args("full"), {}, 600);
  ASSERT_EQ(full.exit_code, 0) << full.err;

  // Killed after step 13 of 24 in the first epoch: the newest checkpoint is
  // step 10, and steps 11-13 are lost and redone.
  RunResult killed = RunAndKill("tuneforge-train", args("cut"), "step 13/48");
  ASSERT_EQ(killed.exit_code, 137) << killed.out << killed.err;
  ASSERT_TRUE(std::filesystem::exists(dir + "/cut-checkpoints/step-00000010/trainer_state.json"));
  std::vector<std::string> resume = args("cut");
  resume.push_back("--resume");
  RunResult resumed = testing::Run("tuneforge-train", resume, {}, 600);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from the checkpoint of step 10"), std::string::npos)
      << resumed.out;

  std::string a, b;
  ASSERT_TRUE(ReadWholeFile(dir + "/full.csv", &a));
  ASSERT_TRUE(ReadWholeFile(dir + "/cut.csv", &b));
  std::map<std::string, std::vector<double>> expected = MetricRows(a), got = MetricRows(b);
  ASSERT_EQ(expected.size(), 48u + 2 + 6);  // steps, epoch evaluations, evaluations every 7
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [key, values] : expected) {
    ASSERT_TRUE(got.count(key)) << key;
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_NEAR(got[key][i], values[i], 1e-6) << key << " column " << i;
    }
  }
  // The final weights are the same bytes.
  std::string wa, wb;
  ASSERT_TRUE(ReadWholeFile(dir + "/full-model/model.safetensors", &wa));
  ASSERT_TRUE(ReadWholeFile(dir + "/cut-model/model.safetensors", &wb));
  EXPECT_TRUE(wa == wb) << "the resumed run ended with other weights";

  // A resume with other settings is refused, naming them.
  std::vector<std::string> other = resume;
  other[7] = "1e-3";  // --learning-rate
  RunResult refused = testing::Run("tuneforge-train", other, {}, 600);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("was made by a run with other settings"), std::string::npos)
      << refused.err;
}

// Early stopping ends a run whose validation loss stops improving, and the
// output is the best checkpoint's model.
TEST(ResumeTest, EarlyStoppingKeepsTheBestModel) {
  const std::string dir = FreshDir("early");
  const std::string data = std::string(TUNEFORGE_SOURCE_DIR) + "/examples/hr.json";
  // A learning rate far too high: validation loss soon stops improving by
  // the minimum delta.
  RunResult r = testing::Run(
      "tuneforge-train",
      {"--data", data, "--epochs", "30", "--learning-rate", "0.05", "--threads", "1",
       "--eval-every", "3", "--early-stopping-patience", "2", "--early-stopping-min-delta",
       "0.05", "--checkpoint-dir", dir + "/checkpoints", "--output", dir + "/model",
       "--metrics-csv", dir + "/m.csv"},
      {}, 600);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_NE(r.out.find("early stopping: validation loss did not improve by 0.05 in 2 "
                       "evaluations"),
            std::string::npos)
      << r.out;
  std::string csv;
  ASSERT_TRUE(ReadWholeFile(dir + "/m.csv", &csv));
  std::map<std::string, std::vector<double>> rows = MetricRows(csv);
  double best = 1e9;
  std::string best_key;
  int steps = 0;
  for (const auto& [key, values] : rows) {
    if (key.rfind("step ", 0) == 0) ++steps;
    if (key.rfind("eval ", 0) == 0 && values[0] < best) best = values[0], best_key = key;
  }
  EXPECT_LT(steps, 30 * 24);  // it stopped early
  // The output is the best checkpoint's model, not the last step's.
  const std::string best_step = best_key.substr(5);
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", std::stoll(best_step));
  ASSERT_TRUE(std::filesystem::exists(dir + "/checkpoints/" + name)) << name;
  std::string out_weights, best_weights;
  ASSERT_TRUE(ReadWholeFile(dir + "/model/model.safetensors", &out_weights));
  ASSERT_TRUE(ReadWholeFile(dir + "/checkpoints/" + std::string(name) + "/model.safetensors",
                            &best_weights));
  EXPECT_TRUE(out_weights == best_weights);
}

}  // namespace
}  // namespace tuneforge::testing
