// End to end, the `tuneforge` CLI as its users see it, against a real
// scheduler with a local worker: -o json, yaml and table output read back by
// independent parsers, metrics, plots and TensorBoard files that match the
// worker's CSV, settings from flags, environment and config file, the live
// watch view on a terminal, exit codes, and shell completion.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cluster.h"

namespace tuneforge::testing {
namespace {

// -o yaml is the JSON document in YAML: read back by an independent parser
// (js-yaml, npm), it equals -o json, for a job, a dataset with problems (a
// list of objects) and a stream of events (one YAML document each).
TEST_F(EndToEndTest, YamlReadsBackAsTheJson) {
  WriteFile(dir_ + "/broken.jsonl",
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 1}\n"
            "{\"prompt\": \"c: d\", \"completion\": \"\\\"quoted\\\" #x\"}\n");
  const std::string broken = server_->Cli({"-o", "name", "datasets", "upload",
                                           dir_ + "/broken.jsonl"}).out;
  const std::string job = CreateJob(UploadDataset(dir_ + "/data.json"), 1);
  ASSERT_EQ(server_->Cli({"jobs", "watch", job}).exit_code, 0);
  const std::string node = std::string("NODE_PATH=") + TUNEFORGE_NPM_DIR + "/node_modules node -e '"
      "const fs = require(\"fs\"), yaml = require(\"js-yaml\");"
      "const docs = yaml.loadAll(fs.readFileSync(process.argv[1], \"utf8\"))"
      ".filter((d) => d !== null);"
      "const json = fs.readFileSync(process.argv[2], \"utf8\").trim().split(/\\n(?=\\{)/)"
      ".map((t) => JSON.parse(t));"
      "const canon = (v) => Array.isArray(v) ? v.map(canon) : v && typeof v === \"object\" ?"
      "  Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;"
      "const same = JSON.stringify(canon(docs)) === JSON.stringify(canon(json));"
      "console.log(docs.length, same); process.exit(same && docs.length > 0 ? 0 : 1);' ";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"jobs", "get", job},
        std::vector<std::string>{"datasets", "get", broken.substr(0, broken.find('\n'))},
        std::vector<std::string>{"jobs", "watch", job}}) {
    std::vector<std::string> yaml_args = {"-o", "yaml"}, json_args = {"-o", "json"};
    yaml_args.insert(yaml_args.end(), args.begin(), args.end());
    json_args.insert(json_args.end(), args.begin(), args.end());
    RunResult yaml = server_->Cli(yaml_args);
    RunResult json = server_->Cli(json_args);
    ASSERT_EQ(yaml.exit_code, 0) << yaml.err;
    WriteFile(dir_ + "/out.yaml", yaml.out);
    WriteFile(dir_ + "/out.json", json.out);
    EXPECT_EQ(std::system((node + dir_ + "/out.yaml " + dir_ + "/out.json").c_str()), 0)
        << args[0] << " " << args[1] << "\n" << yaml.out;
  }
}

// The metrics from the events equal the worker's metrics CSV, byte for
// byte; the plot of them is well-formed SVG whose points are those values;
// the TensorBoard file holds the same values.
TEST_F(EndToEndTest, MetricsAndPlotMatchTheMetricsCsv) {
  const std::string job = CreateJob(UploadDataset(dir_ + "/data.json"), 2);
  ASSERT_EQ(server_->Cli({"jobs", "watch", job}).exit_code, 0);
  RunResult csv = server_->Cli({"jobs", "metrics", job, "--csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  RunResult got = server_->Cli({"jobs", "download", job, "--artifact", "metrics", "--dir",
                                dir_ + "/artifacts"});
  RunResult merged = server_->Cli({"jobs", "download", job, "--artifact", "merged", "-o",
                                   dir_ + "/merged"});
  EXPECT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/merged/model.safetensors")) << merged.out;
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(csv.out, ReadAll(dir_ + "/artifacts/metrics.csv"));
  EXPECT_GT(std::count(csv.out.begin(), csv.out.end(), '\n'), 10);
  RunResult table = server_->Cli({"jobs", "metrics", job});
  EXPECT_NE(table.out.find("TRAIN"), std::string::npos) << table.out;
  // `jobs events`: the same events `watch` gave, for pollers; --after pages.
  json all = ParseJson(server_->Cli({"-o", "json", "jobs", "events", job}));
  RunResult lines = server_->Cli({"jobs", "events", job});
  ASSERT_GT(all["events"].size(), 5u);
  EXPECT_EQ(static_cast<size_t>(std::count(lines.out.begin(), lines.out.end(), '\n')),
            all["events"].size());
  json later = ParseJson(server_->Cli({"-o", "json", "jobs", "events", job, "--after", "3"}));
  EXPECT_EQ(later["events"].size(), all["events"].size() - 3);
  EXPECT_EQ(later["events"][0]["sequence"], "4");
  // Lists are tables; `-o table` is the same as text.
  RunResult jobs_table = server_->Cli({"-o", "table", "jobs", "list"});
  EXPECT_EQ(jobs_table.out.rfind("NAME", 0), 0u) << jobs_table.out;
  EXPECT_NE(jobs_table.out.find(job + "  SUCCEEDED"), std::string::npos) << jobs_table.out;
  RunResult plot = server_->Cli({"jobs", "plot", job, "-o", dir_ + "/loss.svg"});
  ASSERT_EQ(plot.exit_code, 0) << plot.err;
  WriteFile(dir_ + "/metrics.csv", csv.out);
  const std::string cmd = std::string("python3 ") + TUNEFORGE_SOURCE_DIR + "/tests/plot_check.py " +
                          dir_ + "/loss.svg " + dir_ + "/metrics.csv > " + dir_ + "/check.txt 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << ReadAll(dir_ + "/check.txt");

  // The TensorBoard event file, read by a reader written from the format's
  // description: framing and CRCs hold, every event is a CSV row.
  RunResult tb = server_->Cli({"jobs", "download", job, "--artifact", "tensorboard", "-o",
                               dir_ + "/tb"});
  ASSERT_EQ(tb.exit_code, 0) << tb.err;
  const std::string events = tb.out.substr(0, tb.out.find('\n'));
  EXPECT_NE(events.find("events.out.tfevents."), std::string::npos) << tb.out;
  const std::string read = std::string("python3 ") + TUNEFORGE_SOURCE_DIR +
                           "/tests/tensorboard_check.py " + events + " " + dir_ +
                           "/metrics.csv > " + dir_ + "/tb.txt 2>&1";
  EXPECT_EQ(std::system(read.c_str()), 0) << ReadAll(dir_ + "/tb.txt");
}

// Where the CLI's settings come from: flags, then TUNEFORGE_* variables,
// then ~/.config/tuneforge/config.toml.
TEST_F(EndToEndTest, CliSettingsComeFromFlagsThenEnvironmentThenConfigFile) {
  std::filesystem::create_directories(dir_ + "/home/.config/tuneforge");
  WriteFile(dir_ + "/home/.config/tuneforge/config.toml",
            "# defaults\naddr = \"" + server_->addr() + "\"\noutput = \"json\"\n");
  const std::string home = "HOME=" + dir_ + "/home";
  RunResult from_file = testing::Run("tuneforge", {"jobs", "list"}, {home});
  EXPECT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_NO_THROW(json::parse(from_file.out)) << from_file.out;  // output = "json"
  RunResult env = testing::Run("tuneforge", {"jobs", "list"}, {home, "TUNEFORGE_ADDR=127.0.0.1:1"});
  EXPECT_EQ(env.exit_code, 3) << "the environment beats the file";
  RunResult flag =
      testing::Run("tuneforge", {"--addr=" + server_->addr(), "-o", "name", "jobs", "list"},
                   {home, "TUNEFORGE_ADDR=127.0.0.1:1"});
  EXPECT_EQ(flag.exit_code, 0) << "a flag beats both: " << flag.err;
  WriteFile(dir_ + "/home/.config/tuneforge/config.toml", "adress = \"x\"\n");
  RunResult typo = testing::Run("tuneforge", {"jobs", "list"}, {home});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("line 1: no option --adress"), std::string::npos) << typo.err;
}

// `jobs watch` on a terminal (a pty) redraws one view in place: progress
// bars, the ETA, losses, a sparkline; piped, or with NO_COLOR, it prints
// one plain line per event and no escape codes.
TEST_F(EndToEndTest, WatchRedrawsALiveViewOnATerminalAndPlainLinesOtherwise) {
  const std::string job = CreateJob(UploadDataset(dir_ + "/data.json"), 2);
  const std::string run = std::string("python3 ") + TUNEFORGE_SOURCE_DIR + "/tests/pty_run.py ";
  const std::string cli = BinDir() + "/tuneforge --addr=" + server_->addr() + " jobs watch " + job;
  ASSERT_EQ(std::system((run + dir_ + "/tty.out " + cli).c_str()), 0) << ReadAll(dir_ + "/tty.out");
  const std::string tty = ReadAll(dir_ + "/tty.out");
  EXPECT_NE(tty.find("\x1b[2K"), std::string::npos) << "lines are cleared and redrawn";
  EXPECT_NE(tty.find("F\x1b[2K" + job), std::string::npos) << "the cursor goes back up";
  for (const char* part : {"█", "ETA", "tokens/s", "train loss", "validation loss",
                           "\x1b[2Kloss ", "▁", "SUCCEEDED"}) {
    EXPECT_NE(tty.find(part), std::string::npos) << part << "\n" << tty;
  }
  EXPECT_NE(tty.find("step  10/10"), std::string::npos) << tty;  // 2 epochs of 5 steps
  // Plain when told so, or piped.
  ASSERT_EQ(std::system((run + dir_ + "/plain.out env NO_COLOR=1 " + cli).c_str()), 0);
  const std::string plain = ReadAll(dir_ + "/plain.out");
  EXPECT_EQ(plain.find("\x1b["), std::string::npos) << plain;
  EXPECT_NE(plain.find("state RUNNING -> SUCCEEDED"), std::string::npos) << plain;
  RunResult piped = server_->Cli({"jobs", "watch", job});
  EXPECT_EQ(piped.out.find("\x1b["), std::string::npos);
  EXPECT_NE(piped.out.find("#1 "), std::string::npos) << piped.out;
}

TEST_F(EndToEndTest, ErrorsHaveExitCodes) {
  EXPECT_EQ(server_->Cli({"jobs", "get", "jobs/doesnotexist"}).exit_code, 4);
  RunResult bad = server_->Cli({"jobs", "create", "--training-dataset", "datasets/nope"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("job.training_dataset"), std::string::npos) << bad.err;
  const std::string dataset = UploadDataset(dir_ + "/data.json");
  RunResult range = server_->Cli(
      {"jobs", "create", "--training-dataset", dataset, "--epochs", "100000"});
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_NE(range.err.find("job.hyperparameters.epochs"), std::string::npos) << range.err;
  EXPECT_EQ(server_->Cli({"jobs", "frobnicate"}).exit_code, 2);
  const std::string addr = server_->addr();
  EXPECT_EQ(server_->Stop(), 0) << server_->Log();  // SIGTERM: a clean exit
  RunResult down = testing::Run("tuneforge", {"--addr=" + addr, "jobs", "list"});
  EXPECT_EQ(down.exit_code, 3) << down.err;
}

// `tuneforge completion bash|zsh`: generated from the CLI's definition,
// loaded by the real shells, completing subcommands and flags at each level.
TEST(CompletionTest, BashAndZshCompleteSubcommandsAndFlags) {
  const std::string dir = FreshDir("completion");
  for (const char* shell : {"bash", "zsh"}) {
    SCOPED_TRACE(shell);
    RunResult script = testing::Run("tuneforge", {"completion", shell});
    ASSERT_EQ(script.exit_code, 0) << script.err;
    WriteFile(dir + "/tf." + shell, script.out);
    // Each case: the words typed (the last is being completed), then what
    // must be offered.
    const std::string probe =
        std::string("source ") + dir + "/tf." + shell + "; " +
        (std::string(shell) == "zsh" ? "setopt ksharrays; " : "") +
        "complete_words() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); _tuneforge; "
        "echo \"${COMPREPLY[*]}\"; }; "
        "complete_words tuneforge ''; complete_words tuneforge jobs ''; "
        "complete_words tuneforge --addr x jobs plot --o; complete_words tuneforge workers ''";
    WriteFile(dir + "/probe." + shell, probe + "\n");
    const std::string cmd = std::string("HOME=") + dir + " " + shell + " " + dir + "/probe." +
                            shell + " > " + dir + "/out.txt 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadAll(dir + "/out.txt");
    std::istringstream lines(ReadAll(dir + "/out.txt"));
    std::vector<std::string> got;
    for (std::string line; std::getline(lines, line);) got.push_back(line);
    ASSERT_EQ(got.size(), 4u) << ReadAll(dir + "/out.txt");
    for (const char* word : {"datasets", "models", "jobs", "workers", "--addr", "--token", "-o"}) {
      EXPECT_NE((" " + got[0] + " ").find(std::string(" ") + word + " "), std::string::npos)
          << word << " in " << got[0];
    }
    for (const char* word : {"create", "watch", "plot", "metrics", "download", "--help"}) {
      EXPECT_NE((" " + got[1] + " ").find(std::string(" ") + word + " "), std::string::npos)
          << word << " in " << got[1];
    }
    EXPECT_NE(got[2].find("--out"), std::string::npos) << got[2];
    EXPECT_NE(got[3].find("list"), std::string::npos) << got[3];
  }
}

}  // namespace
}  // namespace tuneforge::testing
