// Data-parallel training with real tuneforge-train processes meeting on a
// loopback port: two ranks train as one process accumulating both ranks'
// micro-batches (same losses, same weights), a killed rank stops the other
// with a clear error and the run resumes exactly, and ranks that disagree
// on their data or settings, or never meet, are refused.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "common/file_util.h"
#include "tests/process.h"

namespace tuneforge::testing {
namespace {

// tuneforge-train's arguments for a run named `name` under `dir`.
std::vector<std::string> TrainArgs(const std::string& dir, const std::string& name,
                                   const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--data",
                                   std::string(TUNEFORGE_SOURCE_DIR) + "/examples/hr.json",
                                   "--model",
                                   "tiny-llama",
                                   "--epochs",
                                   "2",
                                   "--learning-rate",
                                   "3e-3",
                                   "--batch-size",
                                   "4",
                                   "--log-every",
                                   "1",
                                   "--eval-every",
                                   "7",
                                   "--threads",
                                   "1",
                                   "--checkpoint-dir",
                                   dir + "/" + name + "-checkpoints",
                                   "--checkpoint-every",
                                   "5",
                                   "--metrics-csv",
                                   dir + "/" + name + ".csv",
                                   "--output",
                                   dir + "/" + name + "-model"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::vector<std::string> RankArgs(int rank, int port, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--world-size", "2",
                                   "--rank",       std::to_string(rank),
                                   "--rendezvous", "127.0.0.1:" + std::to_string(port)};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Runs ranks 0 and 1 together; rank 0's result, and rank 1's exit code.
RunResult RunBothRanks(const std::string& dir, const std::vector<std::string>& extra,
                       int* rank1_exit, const std::string& suffix = "") {
  const int port = FreeTcpPort();
  BackgroundProcess rank1("tuneforge-train",
                          TrainArgs(dir, "rank1" + suffix, RankArgs(1, port, extra)),
                          dir + "/rank1" + suffix);
  RunResult rank0 = testing::Run(
      "tuneforge-train", TrainArgs(dir, "rank0" + suffix, RankArgs(0, port, extra)), {}, 600);
  *rank1_exit = rank1.Wait(60);
  if (*rank1_exit != 0) rank0.err += "\nrank 1: " + rank1.Out() + rank1.Err();
  return rank0;
}

// The file's bytes; a file that cannot be read fails the test.
std::string ReadOrFail(const std::string& path) {
  std::string text;
  EXPECT_TRUE(ReadWholeFile(path, &text)) << path;
  return text;
}

void ExpectSameRows(const std::string& expected_csv, const std::string& got_csv) {
  std::map<std::string, std::vector<double>> expected = MetricRows(ReadOrFail(expected_csv)),
                                             got = MetricRows(ReadOrFail(got_csv));
  ASSERT_EQ(got.size(), expected.size()) << got_csv;
  for (const auto& [key, values] : expected) {
    ASSERT_TRUE(got.count(key)) << got_csv << ": " << key;
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_NEAR(got[key][i], values[i], 1e-6) << got_csv << ": " << key << " column " << i;
    }
  }
}

// Two ranks accumulating one micro-batch each take the same steps as one
// process accumulating two: the same losses, gradient norms, evaluations
// and final weights, full fine-tuning and LoRA. Rank 1 writes neither
// checkpoints nor a model.
TEST(DataParallelTest, TwoRanksTrainAsOneProcessAccumulatingBoth) {
  for (const std::vector<std::string>& method :
       {std::vector<std::string>{}, std::vector<std::string>{"--lora-rank", "4"}}) {
    const std::string dir = FreshDir(method.empty() ? "dp-full" : "dp-lora");
    std::vector<std::string> single_args = method;
    single_args.insert(single_args.end(), {"--grad-accum", "2"});
    RunResult single =
        testing::Run("tuneforge-train", TrainArgs(dir, "single", single_args), {}, 600);
    ASSERT_EQ(single.exit_code, 0) << single.err;
    int rank1_exit = -1;
    RunResult rank0 = RunBothRanks(dir, method, &rank1_exit);
    ASSERT_EQ(rank0.exit_code, 0) << rank0.err;
    ASSERT_EQ(rank1_exit, 0);

    // 48 steps, 2 epoch-end evaluations and 6 more every 7 steps.
    ASSERT_EQ(MetricRows(ReadOrFail(dir + "/single.csv")).size(), 48u + 2 + 6);
    ExpectSameRows(dir + "/single.csv", dir + "/rank0.csv");
    ExpectSameRows(dir + "/single.csv", dir + "/rank1.csv");
    EXPECT_EQ(ReadOrFail(dir + "/single-model/model.safetensors"),
              ReadOrFail(dir + "/rank0-model/model.safetensors"));
    if (!method.empty()) {
      EXPECT_EQ(ReadOrFail(dir + "/single-model/adapter/adapter_model.safetensors"),
                ReadOrFail(dir + "/rank0-model/adapter/adapter_model.safetensors"));
    }
    EXPECT_TRUE(std::filesystem::exists(dir + "/rank0-checkpoints/step-00000048"));
    EXPECT_FALSE(std::filesystem::exists(dir + "/rank1-model"));
    EXPECT_FALSE(std::filesystem::exists(dir + "/rank1-checkpoints/step-00000048"));
  }
}

// A rank killed mid-run makes the other fail at once, saying why; started
// again with --resume, rank 0 resumes from its newest checkpoint, rank 1
// takes its state, and the run ends as the uninterrupted one did.
TEST(DataParallelTest, AKilledRankStopsTheOtherAndTheRunResumesExactly) {
  const std::string dir = FreshDir("dp-kill");
  int rank1_exit = -1;
  RunResult whole = RunBothRanks(dir, {}, &rank1_exit, "-whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  ASSERT_EQ(rank1_exit, 0);

  const int port = FreeTcpPort();
  BackgroundProcess rank0("tuneforge-train", TrainArgs(dir, "rank0", RankArgs(0, port)),
                          dir + "/rank0");
  {
    BackgroundProcess rank1("tuneforge-train", TrainArgs(dir, "rank1", RankArgs(1, port)),
                            dir + "/rank1");
    for (int i = 0; i < 1200 && rank1.Out().find("step 13/48") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_NE(rank1.Out().find("step 13/48"), std::string::npos) << rank1.Out() << rank1.Err();
    rank1.Signal(SIGKILL);
    EXPECT_EQ(rank1.Wait(10), 128 + SIGKILL);
  }
  EXPECT_EQ(rank0.Wait(60), 1) << rank0.Out();
  EXPECT_NE(rank0.Err().find("over the data-parallel ranks failed"), std::string::npos)
      << rank0.Err();
  ASSERT_TRUE(std::filesystem::exists(dir + "/rank0-checkpoints/step-00000010"));
  ASSERT_FALSE(std::filesystem::exists(dir + "/rank0-checkpoints/step-00000015"));

  RunResult resumed = RunBothRanks(dir, {"--resume"}, &rank1_exit);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  ASSERT_EQ(rank1_exit, 0);
  EXPECT_NE(resumed.out.find("resumed from the checkpoint of step 10"), std::string::npos)
      << resumed.out;
  EXPECT_NE(ReadAll(dir + "/rank1.out").find("resumed from the checkpoint of step 10"),
            std::string::npos);
  ExpectSameRows(dir + "/rank0-whole.csv", dir + "/rank0.csv");
  ExpectSameRows(dir + "/rank0-whole.csv", dir + "/rank1.csv");
  EXPECT_EQ(ReadOrFail(dir + "/rank0-whole-model/model.safetensors"),
            ReadOrFail(dir + "/rank0-model/model.safetensors"));
}

// Ranks with other settings are refused on every rank, each saying whose
// differ; a rank alone gives up after the rendezvous timeout.
TEST(DataParallelTest, RanksThatDisagreeOrNeverMeetAreRefused) {
  const std::string dir = FreshDir("dp-refused");
  const int port = FreeTcpPort();
  BackgroundProcess rank1("tuneforge-train",
                          TrainArgs(dir, "rank1", RankArgs(1, port, {"--max-seq-len", "32"})),
                          dir + "/rank1");
  RunResult rank0 =
      testing::Run("tuneforge-train", TrainArgs(dir, "rank0", RankArgs(0, port)), {}, 120);
  EXPECT_EQ(rank0.exit_code, 1);
  EXPECT_NE(rank0.err.find("1 rank(s)' settings and data differ from rank 0's"), std::string::npos)
      << rank0.err;
  EXPECT_EQ(rank1.Wait(60), 1);
  EXPECT_NE(rank1.Err().find("rank 1's settings and data differ from rank 0's"), std::string::npos)
      << rank1.Err();
  EXPECT_NE(rank1.Err().find("max_len=32"), std::string::npos) << rank1.Err();

  RunResult alone = testing::Run(
      "tuneforge-train",
      TrainArgs(dir, "alone", RankArgs(0, FreeTcpPort(), {"--rendezvous-timeout", "2"})), {}, 120);
  EXPECT_EQ(alone.exit_code, 1);
  EXPECT_NE(alone.err.find("rank 0 of 2 could not meet the others at 127.0.0.1:"),
            std::string::npos)
      << alone.err;
  EXPECT_NE(alone.err.find("(waiting up to 2 s)"), std::string::npos) << alone.err;

  RunResult bad =
      testing::Run("tuneforge-train", TrainArgs(dir, "bad", RankArgs(2, port)), {}, 120);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("rank must be in [0, world_size)"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace tuneforge::testing
