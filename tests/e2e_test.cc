// The walking skeleton end to end: a real scheduler with a real local worker
// on a free loopback port, driven only through the real `tuneforge` CLI.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"

#include "common/sha256.h"
#include "tests/process.h"

namespace tuneforge::testing {
namespace {

using json = nlohmann::json;

json ParseJson(const RunResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return json::parse(r.out);
}

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    server_ = std::make_unique<ServerProcess>(dir_, 1);
    WriteFile(dir_ + "/data.json", LeaveDataset(40));
  }

  std::string Upload(const std::string& file) {
    RunResult r = server_->Cli({"-o", "name", "datasets", "upload", file});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }

  std::string CreateJob(const std::string& dataset, int epochs) {
    RunResult r = server_->Cli({"-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                                "--training-dataset", dataset, "--epochs",
                                std::to_string(epochs), "--learning-rate", "3e-3",
                                "--max-seq-len", "64", "--log-every", "1"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }

  json GetJob(const std::string& job) { return ParseJson(server_->Cli({"-o", "json", "jobs", "get", job})); }

  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(EndToEndTest, UploadCreateAndWatchUntilSucceeded) {
  const std::string dataset = Upload(dir_ + "/data.json");
  ASSERT_EQ(dataset.rfind("datasets/", 0), 0u) << dataset;
  json d = ParseJson(server_->Cli({"-o", "json", "datasets", "get", dataset}));
  EXPECT_EQ(d["state"], "DATASET_STATE_READY");
  EXPECT_EQ(d["report"]["exampleCount"], "40");  // int64 is a string in proto JSON

  const std::string job = CreateJob(dataset, 3);
  ASSERT_EQ(job.rfind("jobs/", 0), 0u) << job;

  // Text mode: one line per event, and the job summary at the end.
  RunResult watch = server_->Cli({"jobs", "watch", job});
  ASSERT_EQ(watch.exit_code, 0) << watch.out << watch.err << server_->Log();
  EXPECT_NE(watch.out.find("state QUEUED -> RUNNING"), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("training 859136 parameters on 36 examples (4 for validation)"),
            std::string::npos)
      << watch.out;
  EXPECT_NE(watch.out.find("train_loss"), std::string::npos);
  EXPECT_NE(watch.out.find("validation_loss"), std::string::npos);
  EXPECT_NE(watch.out.find("state RUNNING -> SUCCEEDED"), std::string::npos);

  // JSON mode replays the same events: sequence numbers 1..N without gaps,
  // training loss falling, one evaluation per epoch.
  RunResult replay = server_->Cli({"-o", "json", "jobs", "watch", job});
  ASSERT_EQ(replay.exit_code, 0);
  std::vector<json> events;
  std::istringstream lines(replay.out);
  std::string buffer, line;
  while (std::getline(lines, line)) {
    buffer += line + "\n";
    if (line == "}") {
      events.push_back(json::parse(buffer));
      buffer.clear();
    }
  }
  ASSERT_GT(events.size(), 5u);
  std::vector<double> losses;
  int evaluations = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i]["sequence"], std::to_string(i + 1));
    if (events[i].contains("metrics")) losses.push_back(events[i]["metrics"]["loss"]);
    if (events[i].contains("evaluation")) ++evaluations;
  }
  EXPECT_EQ(evaluations, 3);
  ASSERT_GE(losses.size(), 6u);
  EXPECT_LT(losses.back(), losses.front() - 1.0) << "training loss did not fall";

  json j = GetJob(job);
  EXPECT_EQ(j["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(j["trainExamples"], "36");
  EXPECT_EQ(j["validationExamples"], "4");
  EXPECT_EQ(j["progress"]["step"], j["progress"]["totalSteps"]);
  EXPECT_EQ(j["progress"]["epoch"], 3);
  EXPECT_TRUE(j["progress"]["hasValidationLoss"]);

  // Resuming a watch after event 3 replays from event 4 only.
  RunResult resumed = server_->Cli({"jobs", "watch", job, "--after", "3"});
  EXPECT_EQ(resumed.exit_code, 0);
  EXPECT_EQ(resumed.out.rfind("#4 ", 0), 0u) << resumed.out;

  RunResult listed = server_->Cli({"jobs", "list", "--state", "SUCCEEDED"});
  EXPECT_NE(listed.out.find(job), std::string::npos);
}

// A Hugging Face folder goes in through `models import`, is fine-tuned, the
// result is a model of its own that a second job fine-tunes further, and
// models in use cannot be deleted.
TEST_F(EndToEndTest, ImportFineTuneAndContinueAModel) {
  const std::string folder = dir_ + "/tiny-llama";
  RunResult init = testing::Run("tuneforge-train", {"init", "--preset", "tiny-llama", "--output", folder,
                                           "--seed", "7"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  WriteFile(folder + "/README.md", "not a model file\n");
  RunResult imported = server_->Cli({"-o", "json", "models", "import", folder,
                                     "--display-name", "my llama"});
  ASSERT_EQ(imported.exit_code, 0) << imported.out << imported.err;
  EXPECT_NE(imported.err.find("skipping README.md"), std::string::npos) << imported.err;
  json m = json::parse(imported.out);
  const std::string model = m["name"];
  EXPECT_EQ(model.rfind("models/m", 0), 0u) << model;
  EXPECT_EQ(m["source"], "MODEL_SOURCE_IMPORTED");
  EXPECT_EQ(m["modelType"], "llama");
  EXPECT_EQ(m["parameterCount"], "792192");
  EXPECT_EQ(m["contextLength"], 256);
  EXPECT_EQ(m["dtype"], "F32");
  EXPECT_EQ(m["tokenizer"], "byte-level BPE, 258 tokens, 0 merges");
  EXPECT_EQ(m["files"].size(), 3u);

  RunResult listed = server_->Cli({"models", "list"});
  EXPECT_NE(listed.out.find("models/tiny-gpt2"), std::string::npos);
  EXPECT_NE(listed.out.find(model), std::string::npos) << listed.out;

  const std::string dataset = Upload(dir_ + "/data.json");
  auto train = [&](const std::string& base) {
    RunResult r = server_->Cli({"-o", "name", "jobs", "create", "--model", base,
                                "--training-dataset", dataset, "--epochs", "2",
                                "--learning-rate", "3e-3", "--max-seq-len", "64", "--follow"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
    return r.out.substr(0, r.out.find('\n'));
  };
  const std::string first = train(model);
  json j1 = GetJob(first);
  ASSERT_EQ(j1["state"], "JOB_STATE_SUCCEEDED") << j1.dump(2);
  const std::string result = j1["resultModel"];
  EXPECT_EQ(result, "models/ft-" + first.substr(5));
  json r1 = ParseJson(server_->Cli({"-o", "json", "models", "get", result}));
  EXPECT_EQ(r1["source"], "MODEL_SOURCE_JOB");
  EXPECT_EQ(r1["sourceJob"], first);
  EXPECT_EQ(r1["baseModel"], model);
  EXPECT_EQ(r1["parameterCount"], "792192");
  // The tokenizer came through unchanged (same bytes, same blob).
  std::map<std::string, std::string> base_files, result_files;
  for (const json& f : m["files"]) base_files[f["path"]] = f["sha256"];
  for (const json& f : r1["files"]) result_files[f["path"]] = f["sha256"];
  EXPECT_EQ(result_files["tokenizer.json"], base_files["tokenizer.json"]);
  EXPECT_NE(result_files["model.safetensors"], base_files["model.safetensors"]);

  // Continued fine-tuning, named by the job: it starts where the first ended.
  const std::string second = train(first);
  json j2 = GetJob(second);
  EXPECT_EQ(j2["baseModel"], result);
  RunResult w1 = server_->Cli({"jobs", "watch", first});
  RunResult w2 = server_->Cli({"jobs", "watch", second});
  auto first_loss = [](const std::string& out) {
    size_t at = out.find("train_loss ");
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 11));
  };
  EXPECT_LT(first_loss(w2.out), first_loss(w1.out) - 0.5) << w1.out << w2.out;

  // A model a queued job uses cannot be deleted; a preset never.
  RunResult queued = server_->Cli({"-o", "name", "jobs", "create", "--model", result,
                                   "--training-dataset", dataset, "--epochs", "50"});
  ASSERT_EQ(queued.exit_code, 0) << queued.err;
  RunResult refused = server_->Cli({"models", "delete", result});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("cancel it first"), std::string::npos) << refused.err;
  const std::string third = queued.out.substr(0, queued.out.find('\n'));
  EXPECT_EQ(server_->Cli({"jobs", "cancel", third}).exit_code, 0);
  EXPECT_EQ(server_->Cli({"jobs", "watch", third}).exit_code, 1);  // until it is CANCELLED
  RunResult preset = server_->Cli({"models", "delete", "tiny-gpt2"});
  EXPECT_NE(preset.err.find("built in"), std::string::npos) << preset.err;
  // Once no job uses them, both go, and their blobs with them, but for bytes
  // something else still lists: the two jobs' artifacts hold the same
  // config.json and tokenizer.json as the base model.
  for (const std::string& name : {model, result, std::string(j2["resultModel"])}) {
    RunResult gone = server_->Cli({"models", "delete", name});
    EXPECT_EQ(gone.exit_code, 0) << name << gone.err;
  }
  EXPECT_EQ(server_->Cli({"models", "get", model}).exit_code, 4);
  for (const auto& [path, sha] : base_files) {
    const bool artifact = path == "config.json" || path == "tokenizer.json";
    EXPECT_EQ(std::filesystem::exists(dir_ + "/data/blobs/" + sha.substr(0, 2) + "/" + sha),
              artifact)
        << path;
  }
}

// A broken folder is refused at import, naming the file and tensor, and
// leaves nothing behind.
TEST_F(EndToEndTest, BrokenModelFoldersAreRefusedWithTheirFault) {
  const std::string folder = dir_ + "/broken";
  ASSERT_EQ(testing::Run("tuneforge-train", {"init", "--preset", "tiny-gpt2", "--output", folder}).exit_code, 0);
  std::string config;
  {
    std::ifstream in(folder + "/config.json");
    config.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto import_error = [&]() {
    RunResult r = server_->Cli({"models", "import", folder});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    return r.err;
  };
  // One layer more than the weights hold.
  WriteFile(folder + "/config.json",
            std::regex_replace(config, std::regex("\"n_layer\": 4"), "\"n_layer\": 5"));
  EXPECT_NE(import_error().find("missing tensor transformer.h.4."), std::string::npos);
  // A wider vocabulary than the embedding.
  WriteFile(folder + "/config.json",
            std::regex_replace(config, std::regex("\"vocab_size\": 258"), "\"vocab_size\": 300"));
  EXPECT_NE(import_error().find("transformer.wte.weight has shape [258, 128], config.json says "
                                "[300, 128]"),
            std::string::npos);
  // An architecture the engine does not have.
  WriteFile(folder + "/config.json",
            std::regex_replace(config, std::regex("\"gpt2\""), "\"bert\""));
  EXPECT_NE(import_error().find("unsupported model_type \"bert\""), std::string::npos);
  // No tokenizer.
  WriteFile(folder + "/config.json", config);
  std::filesystem::remove(folder + "/tokenizer.json");
  EXPECT_NE(import_error().find("no tokenizer"), std::string::npos);
  // Nothing was stored: no model, no blob.
  RunResult listed = server_->Cli({"-o", "name", "models", "list"});
  EXPECT_EQ(listed.out.find("models/m"), std::string::npos) << listed.out;
  size_t blobs = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/data/blobs")) blobs += e.is_regular_file();
  EXPECT_EQ(blobs, 0u);
}

// Checkpoints and early stopping reach the event stream: the job checkpoints
// as asked, stops when validation loss stops improving, says why, and
// succeeds with a model.
TEST_F(EndToEndTest, CheckpointsAndEarlyStoppingAreReported) {
  const std::string dataset = Upload(dir_ + "/data.json");
  RunResult r = server_->Cli({"jobs", "create", "--training-dataset", dataset, "--epochs", "40",
                              "--learning-rate", "0.05", "--max-seq-len", "64",
                              "--eval-every", "2", "--checkpoint-every", "2",
                              "--early-stopping-patience", "2",
                              "--early-stopping-min-delta", "0.05", "--follow"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
  EXPECT_NE(r.out.find("checkpoint at step 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(best so far)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("info: early stopping: validation loss did not improve by 0.05 in 2 "
                       "evaluations"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("state RUNNING -> SUCCEEDED"), std::string::npos);
  EXPECT_NE(r.out.find("result models/ft-"), std::string::npos);
  EXPECT_EQ(r.out.find("step 200/200"), std::string::npos);  // it did not run all 40 epochs
  // Every checkpoint is listed; an ended job holds none of them any more.
  const std::string job = r.out.substr(0, r.out.find(' '));
  RunResult listed = server_->Cli({"jobs", "checkpoints", job});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(job + "/checkpoints/step-00000002  step 2  epoch 1"),
            std::string::npos)
      << listed.out;
  EXPECT_EQ(listed.out.find("the job resumes here"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("(no longer held)"), std::string::npos) << listed.out;
}

// A LoRA job trains adapters on a Llama preset and stores the merged model;
// a target the model lacks fails the job naming it.
TEST_F(EndToEndTest, LoraJobStoresTheMergedModel) {
  const std::string dataset = Upload(dir_ + "/data.json");
  RunResult r = server_->Cli({"jobs", "create", "--model", "tiny-llama", "--training-dataset",
                              dataset, "--epochs", "2", "--learning-rate", "1e-2",
                              "--max-seq-len", "64", "--lora-rank", "4", "--lora-targets",
                              "q_proj,v_proj,down_proj", "--follow"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
  EXPECT_NE(r.out.find("(LoRA rank 4)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("result models/ft-"), std::string::npos) << r.out;
  const std::string job = r.out.substr(0, r.out.find(' '));
  json j = GetJob(job);
  EXPECT_EQ(j["method"], "TRAINING_METHOD_LORA");
  EXPECT_EQ(j["lora"]["targetModules"].size(), 3u);
  json m = ParseJson(server_->Cli({"-o", "json", "models", "get", j["resultModel"]}));
  EXPECT_EQ(m["parameterCount"], "792192");  // merged: the base's shape, no adapter tensors
  // Artifacts: the merged model, the PEFT adapter, metrics and a manifest.
  std::map<std::string, std::string> artifacts;
  for (const json& a : j["artifacts"]) artifacts[a["path"]] = a["sha256"];
  for (const char* path : {"model/model.safetensors", "model/config.json",
                           "model/tokenizer.json", "adapter/adapter_config.json",
                           "adapter/adapter_model.safetensors", "metrics.csv",
                           "manifest.json"}) {
    EXPECT_EQ(artifacts.count(path), 1u) << path << " in " << j["artifacts"].dump();
  }
  auto blob = [&](const std::string& sha) {
    std::ifstream in(dir_ + "/data/blobs/" + sha.substr(0, 2) + "/" + sha);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  json manifest = json::parse(blob(artifacts["manifest.json"]));
  EXPECT_EQ(manifest["job"]["lora"]["rank"], 4);
  EXPECT_EQ(manifest["training_dataset"]["name"], dataset);
  EXPECT_EQ(manifest["run"]["steps"], 10);
  const std::string csv = blob(artifacts["metrics.csv"]);
  EXPECT_EQ(csv.rfind("step,epoch,train_loss,", 0), 0u) << csv;
  EXPECT_NE(csv.find("\n10,2,"), std::string::npos) << csv;

  // Everything downloads, each file as stored; the merged folder is a model
  // tuneforge-train evaluates as it is, the adapter a PEFT folder of its own.
  const std::string out = dir_ + "/download";
  RunResult all = server_->Cli({"jobs", "download", job, "--artifact", "all", "--dir", out});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  for (const auto& [path, sha] : artifacts) {
    std::ifstream in(out + "/" + path, std::ios::binary);
    EXPECT_EQ(Sha256::Of(std::string(std::istreambuf_iterator<char>(in), {})), sha) << path;
  }
  RunResult eval = testing::Run("tuneforge-train", {"eval", "--model", out + "/model", "--data",
                                           dir_ + "/data.json"});
  EXPECT_EQ(eval.exit_code, 0) << eval.out << eval.err;
  RunResult adapter =
      server_->Cli({"jobs", "download", job, "--artifact", "adapter", "--dir", out + "/peft"});
  ASSERT_EQ(adapter.exit_code, 0) << adapter.err;
  EXPECT_TRUE(std::filesystem::exists(out + "/peft/adapter_config.json"));
  EXPECT_TRUE(std::filesystem::exists(out + "/peft/adapter_model.safetensors"));
  EXPECT_EQ(server_->Cli({"jobs", "download", job, "--artifact", "weights"}).exit_code, 2);

  RunResult bad = server_->Cli({"jobs", "create", "--model", "tiny-llama", "--training-dataset",
                                dataset, "--lora-rank", "4", "--lora-targets", "c_attn"});
  EXPECT_EQ(bad.exit_code, 2);  // refused at creation, before any worker sees it
  EXPECT_NE(bad.err.find("job.lora.target_modules: 'c_attn' matches no projection of a llama "
                         "model (self_attn.q_proj, "),
            std::string::npos)
      << bad.err;
}

TEST_F(EndToEndTest, RunningJobShowsProgressAndCancels) {
  const std::string dataset = Upload(dir_ + "/data.json");
  const std::string job = CreateJob(dataset, 1000);
  // Poll like another service would, until the job has trained a few steps.
  json j;
  for (int i = 0; i < 600; ++i) {
    j = GetJob(job);
    if (j["state"] == "JOB_STATE_RUNNING" && j["progress"].value("step", "0") != "0") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(j["state"], "JOB_STATE_RUNNING") << j.dump();
  EXPECT_EQ(j["progress"]["epoch"], 1);
  EXPECT_GT(j["progress"]["trainLoss"].get<double>(), 0.0);
  RunResult text = server_->Cli({"jobs", "get", job});
  EXPECT_NE(text.out.find("RUNNING"), std::string::npos);
  EXPECT_NE(text.out.find("train_loss"), std::string::npos) << text.out;
  // The worker list shows the local worker training it.
  json workers = ParseJson(server_->Cli({"-o", "json", "workers", "list"}));
  ASSERT_EQ(workers["workers"].size(), 1u) << workers.dump();
  EXPECT_EQ(workers["workers"][0]["state"], "busy");
  EXPECT_EQ(workers["workers"][0]["job"], job);
  EXPECT_EQ(workers["workers"][0]["device"], "cpu");
  EXPECT_EQ(workers["workers"][0]["displayName"], "local-0");
  RunResult table = server_->Cli({"workers", "list"});
  EXPECT_NE(table.out.find("busy"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(job), std::string::npos) << table.out;

  RunResult cancel = server_->Cli({"jobs", "cancel", job});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  // The worker hears of it at its next heartbeat and stops; watch exits 1.
  const auto start = std::chrono::steady_clock::now();
  RunResult watch = server_->Cli({"jobs", "watch", job});
  EXPECT_EQ(watch.exit_code, 1) << watch.out << watch.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_NE(watch.out.find("state RUNNING -> CANCELLED"), std::string::npos) << watch.out;
  j = GetJob(job);
  EXPECT_EQ(j["state"], "JOB_STATE_CANCELLED");
  EXPECT_LT(std::stoll(j["progress"]["step"].get<std::string>()),
            std::stoll(j["progress"]["totalSteps"].get<std::string>()));
  // A finished job cannot be cancelled again.
  EXPECT_EQ(server_->Cli({"jobs", "cancel", job}).exit_code, 1);
  json idle;
  for (int i = 0; i < 100; ++i) {  // it polls for the next job again
    idle = ParseJson(server_->Cli({"-o", "json", "workers", "list"}));
    if (idle["workers"][0]["state"] == "waiting") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(idle["workers"][0]["state"], "waiting") << idle.dump();
  EXPECT_FALSE(idle["workers"][0].contains("job"));

  // The worker is free again: a second job runs to the end.
  const std::string next = CreateJob(dataset, 1);
  EXPECT_EQ(server_->Cli({"jobs", "watch", next}).exit_code, 0) << server_->Log();
}

TEST_F(EndToEndTest, ChatAndPlainTextDatasetsTrain) {
  std::string chat;
  for (int i = 0; i < 12; ++i) {
    chat += R"({"messages": [{"role": "system", "content": "You answer HR questions."}, )"
            R"({"role": "user", "content": "Leave in year )" + std::to_string(2000 + i) +
            R"(?"}, {"role": "assistant", "content": ")" + std::to_string(20 + i) +
            " days.\"}]}\n";
  }
  WriteFile(dir_ + "/chat.jsonl", chat);
  std::string docs;
  for (int i = 0; i < 12; ++i) {
    docs += (i ? "\n---\n" : "") + std::string("Policy ") + std::to_string(i) +
            ": employees get " + std::to_string(20 + i) + " days of leave.";
  }
  WriteFile(dir_ + "/handbook.txt", docs);

  RunResult text_upload = server_->Cli({"-o", "json", "datasets", "upload",
                                        dir_ + "/handbook.txt", "--separator", "\n---\n"});
  ASSERT_EQ(text_upload.exit_code, 0) << text_upload.out << text_upload.err;
  json text = json::parse(text_upload.out);
  EXPECT_EQ(text["report"]["format"], "DATASET_FORMAT_TEXT");
  EXPECT_EQ(text["report"]["exampleCount"], "12");
  EXPECT_EQ(text["separator"], "\n---\n");

  for (const std::string& dataset : {text["name"].get<std::string>(),
                                     Upload(dir_ + "/chat.jsonl")}) {
    const std::string job = CreateJob(dataset, 2);
    RunResult watch = server_->Cli({"jobs", "watch", job});
    EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err << server_->Log();
    EXPECT_NE(watch.out.find("validation_loss"), std::string::npos) << watch.out;
    if (dataset != text["name"]) {
      // Samples continue the conversation from the assistant's turn.
      EXPECT_NE(watch.out.find("user: Leave in year"), std::string::npos) << watch.out;
      EXPECT_NE(watch.out.find("assistant:  ->"), std::string::npos) << watch.out;
    }
  }
}

// The engine's options travel as job fields to the worker, which reports
// what it trains with; a wrong value is refused at creation naming it.
TEST_F(EndToEndTest, TrainingOptionsReachTheWorker) {
  const std::string dataset = Upload(dir_ + "/data.json");
  RunResult r = server_->Cli({"jobs", "create", "--training-dataset", dataset, "--epochs", "2",
                              "--max-seq-len", "96", "--packing", "--warmup-ratio", "0.2",
                              "--recompute-activations", "--precision", "fp32",
                              "--chat-template", "plain", "--samples", "0",
                              "--keep-checkpoints", "1", "--divergence-factor", "0",
                              "--train-on-prompt", "--follow"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
  EXPECT_NE(r.out.find(", cpu fp32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" rows"), std::string::npos) << r.out;  // "packed into N rows"
  EXPECT_EQ(r.out.find("sample:"), std::string::npos) << r.out;
  const std::string job = r.out.substr(0, r.out.find(' '));
  json h = GetJob(job)["hyperparameters"];
  EXPECT_EQ(h["packing"], true);
  EXPECT_EQ(h["warmupRatio"], 0.2);
  EXPECT_EQ(h["recomputeActivations"], true);
  EXPECT_EQ(h["trainOnPrompt"], true);
  EXPECT_EQ(h["keepCheckpoints"], 1);
  EXPECT_EQ(h["chatTemplate"], "plain");

  RunResult bad = server_->Cli({"jobs", "create", "--training-dataset", dataset,
                                "--chat-template", "vicuna"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("job.hyperparameters.chat_template"), std::string::npos) << bad.err;
}

// Another service's client, written with Node's @grpc/grpc-js from the .proto
// files alone (examples/node-client): it uploads, creates, watches and polls
// a job to its end.
TEST_F(EndToEndTest, AClientTuneforgeDidNotWriteSubmitsWatchesAndPolls) {
  const std::string cmd = std::string("NODE_PATH=") + TUNEFORGE_NPM_DIR + "/node_modules node " +
                          TUNEFORGE_SOURCE_DIR + "/examples/node-client/client.js --addr " +
                          server_->addr() + " --data " + dir_ + "/data.json --epochs 2 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_EQ(WEXITSTATUS(status), 0) << out << server_->Log();
  std::vector<json> events, polls;
  json dataset, final;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line);
    if (j.contains("event")) events.push_back(j["event"]);
    if (j.contains("poll")) polls.push_back(j["poll"]);
    if (j.contains("dataset")) dataset = j["dataset"];
    if (j.contains("final")) final = j["final"];
  }
  EXPECT_EQ(dataset["state"], "DATASET_STATE_READY");
  EXPECT_EQ(dataset["examples"], "40");
  ASSERT_FALSE(events.empty());
  for (size_t i = 0; i < events.size(); ++i) {  // the whole stream, in order, once
    EXPECT_EQ(events[i]["sequence"], std::to_string(i + 1));
  }
  EXPECT_EQ(events.back()["stateChange"]["to"], "JOB_STATE_SUCCEEDED");
  EXPECT_GE(polls.size(), 1u);
  EXPECT_EQ(polls.back()["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(final["state"], "JOB_STATE_SUCCEEDED");
  // What it made is there for this project's own CLI too.
  EXPECT_EQ(server_->Cli({"models", "get", final["resultModel"]}).exit_code, 0);
}

// A watcher that opens the stream and never reads: the server's writes to it
// stop at gRPC's flow-control window, and nothing else waits on it; the job
// runs to the end and another watcher gets every event.
TEST_F(EndToEndTest, AWatcherThatNeverReadsDoesNotHoldUpTheJob) {
  const std::string dataset = Upload(dir_ + "/data.json");
  RunResult r = server_->Cli({"-o", "name", "jobs", "create", "--training-dataset", dataset,
                              "--epochs", "40", "--batch-size", "2", "--max-seq-len", "64",
                              "--log-every", "1", "--samples", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string job = r.out.substr(0, r.out.find('\n'));
  auto stub = v1::JobService::NewStub(
      grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext stalled;
  v1::WatchJobRequest req;
  req.set_name(job);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> never_read = stub->WatchJob(&stalled, req);
  RunResult watch = server_->Cli({"-o", "json", "jobs", "watch", job});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << server_->Log();
  // 720 steps' metrics and more: well over a flow-control window of events.
  size_t events = 0;
  for (size_t at = 0; (at = watch.out.find("\"sequence\"", at)) != std::string::npos; ++at) ++events;
  EXPECT_GT(events, 760u);
  EXPECT_GT(watch.out.size(), 256u << 10);
  stalled.TryCancel();
}

// A dropped connection keeps what arrived; running the upload again sends
// only the rest.
TEST_F(EndToEndTest, InterruptedUploadResumes) {
  std::string bytes;
  for (int i = 0; bytes.size() < 3'000'000; ++i) {
    bytes += "{\"prompt\": \"question " + std::to_string(i) + "\", \"completion\": \"answer\"}\n";
  }
  WriteFile(dir_ + "/big.jsonl", bytes);
  RunResult sha =
      testing::Run("tuneforge", {"-o", "json", "datasets", "validate", dir_ + "/big.jsonl"});
  ASSERT_EQ(sha.exit_code, 0);

  // Another client sends the first half, then its connection drops.
  auto stub = v1::DatasetService::NewStub(
      grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
  const std::string upload_id = "resume-test";
  {
    grpc::ClientContext ctx;
    v1::Dataset ignored;
    auto writer = stub->UploadDataset(&ctx, &ignored);
    v1::UploadDatasetRequest req;
    req.mutable_metadata()->set_display_name("big.jsonl");
    req.mutable_metadata()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    req.mutable_metadata()->set_upload_id(upload_id);
    req.mutable_metadata()->set_sha256(Sha256::Of(bytes));  // as the CLI sends it
    ASSERT_TRUE(writer->Write(req));
    for (size_t off = 0; off < bytes.size() / 2; off += 100'000) {
      v1::UploadDatasetRequest chunk;
      chunk.set_chunk(bytes.substr(off, 100'000));
      ASSERT_TRUE(writer->Write(chunk));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the server read them
    ctx.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The server keeps what arrived once it has seen the stream end (a moment
  // after the client's cancel).
  v1::QueryUploadRequest query;
  query.set_upload_id(upload_id);
  v1::QueryUploadResponse kept;
  for (int i = 0; i < 100 && kept.committed_size() == 0; ++i) {
    grpc::ClientContext qctx;
    ASSERT_TRUE(stub->QueryUpload(&qctx, query, &kept).ok());
    if (kept.committed_size() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GT(kept.committed_size(), 0);
  EXPECT_LE(kept.committed_size(), static_cast<int64_t>(bytes.size() / 2 + 100'000));

  // The CLI, given the same upload id and metadata, sends only the rest.
  RunResult resumed = server_->Cli({"-o", "json", "datasets", "upload", dir_ + "/big.jsonl",
                                    "--upload-id", upload_id});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.err.find("resuming upload resume-test at byte " +
                             std::to_string(kept.committed_size())),
            std::string::npos)
      << resumed.err;
  json d = json::parse(resumed.out);
  EXPECT_EQ(d["state"], "DATASET_STATE_READY");
  EXPECT_EQ(d["sizeBytes"], std::to_string(bytes.size()));
  EXPECT_EQ(d["report"]["exampleCount"], json::parse(sha.out)["exampleCount"]);
}

TEST_F(EndToEndTest, BrokenDatasetIsReportedAndRefusedForJobs) {
  WriteFile(dir_ + "/broken.jsonl",
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
            "{\"prompt\": \"a\"}\n"
            "not json\n");
  // A dry run on the server reports the same and stores nothing.
  RunResult dry = server_->Cli({"datasets", "validate", "--remote", dir_ + "/broken.jsonl"});
  EXPECT_EQ(dry.exit_code, 1) << dry.out << dry.err;
  EXPECT_NE(dry.out.find("line 2, column 1, record 2, field /completion"), std::string::npos)
      << dry.out;
  EXPECT_EQ(server_->Cli({"-o", "name", "datasets", "list"}).out, "");

  RunResult upload = server_->Cli({"datasets", "upload", dir_ + "/broken.jsonl"});
  EXPECT_EQ(upload.exit_code, 1);
  EXPECT_NE(upload.out.find("INVALID"), std::string::npos) << upload.out;
  EXPECT_NE(upload.out.find("line 2, column 1, record 2, field /completion"), std::string::npos)
      << upload.out;
  EXPECT_NE(upload.out.find("line 3"), std::string::npos);

  std::string dataset = server_->Cli({"-o", "name", "datasets", "list"}).out;
  dataset = dataset.substr(0, dataset.find('\n'));
  RunResult create = server_->Cli({"jobs", "create", "--training-dataset", dataset});
  EXPECT_EQ(create.exit_code, 1);
  EXPECT_NE(create.err.find("INVALID with 2 errors"), std::string::npos) << create.err;
  EXPECT_EQ(server_->Cli({"datasets", "delete", dataset}).exit_code, 0);
  EXPECT_EQ(server_->Cli({"datasets", "get", dataset}).exit_code, 4);
}

// -o yaml is the JSON document in YAML: read back by an independent parser
// (js-yaml, npm), it equals -o json, for a job, a dataset with problems (a
// list of objects) and a stream of events (one YAML document each).
TEST_F(EndToEndTest, YamlReadsBackAsTheJson) {
  WriteFile(dir_ + "/broken.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 1}\n"
                                    "{\"prompt\": \"c: d\", \"completion\": \"\\\"quoted\\\" #x\"}\n");
  const std::string broken = server_->Cli({"-o", "name", "datasets", "upload",
                                           dir_ + "/broken.jsonl"}).out;
  const std::string job = CreateJob(Upload(dir_ + "/data.json"), 1);
  ASSERT_EQ(server_->Cli({"jobs", "watch", job}).exit_code, 0);
  const std::string node = std::string("NODE_PATH=") + TUNEFORGE_NPM_DIR + "/node_modules node -e '"
      "const fs = require(\"fs\"), yaml = require(\"js-yaml\");"
      "const docs = yaml.loadAll(fs.readFileSync(process.argv[1], \"utf8\")).filter((d) => d !== null);"
      "const json = fs.readFileSync(process.argv[2], \"utf8\").trim().split(/\\n(?=\\{)/).map((t) => JSON.parse(t));"
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
  const std::string job = CreateJob(Upload(dir_ + "/data.json"), 2);
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
  RunResult flag = testing::Run("tuneforge", {"--addr=" + server_->addr(), "-o", "name", "jobs", "list"},
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
  const std::string job = CreateJob(Upload(dir_ + "/data.json"), 2);
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
  const std::string dataset = Upload(dir_ + "/data.json");
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

TEST_F(EndToEndTest, StandardHealthAndReflectionServices) {
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse status;
  grpc::Status s = health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &status);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext rctx;
  rctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = reflection->ServerReflectionInfo(&rctx);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.insert(service.name());
  }
  EXPECT_TRUE(stream->Finish().ok());
  for (const char* name : {"tuneforge.v1.DatasetService", "tuneforge.v1.JobService",
                           "tuneforge.v1.ModelService", "tuneforge.v1.WorkerService",
                           "grpc.health.v1.Health"}) {
    EXPECT_EQ(services.count(name), 1u) << name;
  }
}

}  // namespace
}  // namespace tuneforge::testing

namespace tuneforge::testing {
namespace {

// GET http://127.0.0.1:PORT/metrics, checked by promtool.
std::string Scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  EXPECT_TRUE(res && res->status == 200);
  if (!res) return "";
  EXPECT_NE(res->get_header_value("Content-Type").find("text/plain; version=0.0.4"),
            std::string::npos);
  const std::string file = ::testing::TempDir() + "/scrape-" + std::to_string(port);
  WriteFile(file, res->body);
  const int rc = std::system(("promtool check metrics < " + file + " > " + file + ".check 2>&1").c_str());
  std::ifstream check(file + ".check");
  std::stringstream why;
  why << check.rdbuf();
  EXPECT_EQ(rc, 0) << "promtool check metrics: " << why.str() << "\n" << res->body;
  return res->body;
}

// The value of the sample `line_start` ("name{labels}"), or -1.
double Sample(const std::string& metrics, const std::string& line_start) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(line_start + " ", 0) == 0) return std::stod(line.substr(line_start.size() + 1));
  }
  return -1;
}

int PortFromLog(const std::function<std::string()>& log, const std::string& marker) {
  for (int i = 0; i < 200; ++i) {
    const std::string text = log();
    const size_t at = text.find(marker);
    if (at != std::string::npos) return std::stoi(text.substr(at + marker.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

// /metrics of the server and of a worker: valid for promtool, and counting
// what happened.
TEST(MetricsTest, ServerAndWorkerExposeWhatHappened) {
  const std::string dir = FreshDir("metrics");
  ServerProcess server(dir, 0, {"--metrics-listen=127.0.0.1:0"});
  const int server_port = PortFromLog([&] { return ReadAll(dir + "/server.out"); },
                                      "metrics on http://127.0.0.1:");
  ASSERT_GT(server_port, 0) << ReadAll(dir + "/server.out");
  WriteFile(dir + "/data.json", LeaveDataset(16));
  RunResult up = server.Cli({"-o", "name", "datasets", "upload", dir + "/data.json"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::string dataset = up.out.substr(0, up.out.find('\n'));
  std::vector<std::string> jobs;
  for (int i = 0; i < 3; ++i) {
    RunResult r = server.Cli({"-o", "name", "jobs", "create", "--training-dataset", dataset,
                              "--epochs", "1", "--max-seq-len", "64", "--log-every", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    jobs.push_back(r.out.substr(0, r.out.find('\n')));
  }
  EXPECT_EQ(server.Cli({"jobs", "cancel", jobs[1]}).exit_code, 0);
  EXPECT_EQ(server.Cli({"jobs", "cancel", jobs[2]}).exit_code, 0);
  EXPECT_EQ(server.Cli({"jobs", "get", "jobs/j000000000000"}).exit_code, 4);
  std::string m = Scrape(server_port);
  EXPECT_EQ(Sample(m, "tuneforge_jobs{state=\"QUEUED\"}"), 1) << m;
  EXPECT_EQ(Sample(m, "tuneforge_jobs{state=\"CANCELLED\"}"), 2);
  EXPECT_EQ(Sample(m, "tuneforge_queue_depth"), 1);
  EXPECT_GT(Sample(m, "tuneforge_queue_oldest_age_seconds"), 0);
  EXPECT_EQ(Sample(m, "tuneforge_rpc_requests_total{method=\"tuneforge.v1.JobService/CreateJob\","
                      "code=\"OK\"}"), 3);
  EXPECT_EQ(Sample(m, "tuneforge_rpc_requests_total{method=\"tuneforge.v1.JobService/GetJob\","
                      "code=\"NOT_FOUND\"}"), 1);
  EXPECT_EQ(Sample(m, "tuneforge_rpc_duration_seconds_count{method=\"tuneforge.v1.JobService/"
                      "CreateJob\"}"), 3);
  EXPECT_GT(Sample(m, "tuneforge_stored_bytes"), 0);

  // A worker with metrics of its own trains the queued job.
  BackgroundProcess worker("tuneforge-worker",
                           {"--server=" + server.addr(), "--metrics-listen=127.0.0.1:0",
                            "--threads=1", "--cache-dir=" + dir + "/cache", "--name=w1",
                            "--wait-ms=500"},
                           dir + "/worker");
  const int worker_port = PortFromLog([&] { return worker.Out(); }, "metrics on port ");
  ASSERT_GT(worker_port, 0) << worker.Out();
  RunResult watched = server.Cli({"jobs", "watch", jobs[0]});
  ASSERT_EQ(watched.exit_code, 0) << watched.err;
  // The job ends on the scheduler when the worker reports it; the worker is
  // idle again a moment later, once it has closed the job's streams.
  std::string w = Scrape(worker_port);
  for (int i = 0; i < 100 && Sample(w, "tuneforge_worker_busy{worker=\"w1\"}") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    w = Scrape(worker_port);
  }
  EXPECT_EQ(Sample(w, "tuneforge_worker_jobs_total{worker=\"w1\"}"), 1) << w;
  EXPECT_EQ(Sample(w, "tuneforge_worker_busy{worker=\"w1\"}"), 0);
  // Every step and token of the job, its first reporting window included.
  RunResult got = server.Cli({"-o", "json", "jobs", "get", jobs[0]});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  const nlohmann::json progress = nlohmann::json::parse(got.out)["progress"];
  auto count = [&](const char* key) { return std::stod(progress.at(key).get<std::string>()); };
  EXPECT_GT(count("step"), 1);
  EXPECT_EQ(Sample(w, "tuneforge_worker_steps_total{worker=\"w1\"}"), count("step")) << w;
  EXPECT_EQ(Sample(w, "tuneforge_worker_tokens_total{worker=\"w1\"}"), count("tokensSeen"));
  EXPECT_GT(Sample(w, "tuneforge_worker_step_seconds{worker=\"w1\"}"), 0);
  EXPECT_GT(Sample(w, "tuneforge_worker_resident_memory_bytes{worker=\"w1\"}"), 1e6);
  m = Scrape(server_port);
  EXPECT_EQ(Sample(m, "tuneforge_jobs{state=\"SUCCEEDED\"}"), 1);
  EXPECT_EQ(Sample(m, "tuneforge_queue_depth"), 0);
  EXPECT_EQ(Sample(m, "tuneforge_workers{state=\"waiting\"}") +
                Sample(m, "tuneforge_workers{state=\"away\"}"), 1);
  worker.Signal(SIGTERM);
  EXPECT_EQ(worker.Wait(30), 0);
}

// --log-format=json: every line the server and its local worker write is one
// JSON object with time, level and message, the worker's lines name it and
// the job they are about; a name with quotes and a backslash comes back
// exactly (spdlog's own patterns would not escape it).
TEST(LoggingTest, JsonLogsAreOneObjectPerLine) {
  const std::string dir = FreshDir("json-logs");
  std::string job_id;
  {
    ServerProcess server(dir, 1, {"--log-format=json"});
    WriteFile(dir + "/data.json", LeaveDataset(16));
    RunResult up = server.Cli({"-o", "name", "datasets", "upload", dir + "/data.json"});
    ASSERT_EQ(up.exit_code, 0) << up.err;
    RunResult created = server.Cli({"-o", "name", "jobs", "create", "--training-dataset",
                                    up.out.substr(0, up.out.find('\n')), "--epochs", "1",
                                    "--max-seq-len", "64", "--follow"});
    ASSERT_EQ(created.exit_code, 0) << created.err;
    job_id = created.out.substr(5, created.out.find('\n') - 5);
    // A worker with no scheduler to reach logs a warning at once.
    BackgroundProcess odd("tuneforge-worker",
                          {"--server=127.0.0.1:1", "--log-format=json", "--name=w\"1\\x",
                           "--cache-dir=" + dir + "/odd"},
                          dir + "/odd");
    for (int i = 0; i < 600 && odd.Out().find('\n') == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    odd.Signal(SIGTERM);
    ASSERT_EQ(odd.Wait(30), 0);
    bool named = false;
    std::istringstream lines(odd.Out());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line);  // throws, failing the test, on anything else
      named = named || (j["worker"] == "w\"1\\x" && j["message"] == "worker w\"1\\x stopped");
    }
    EXPECT_TRUE(named) << odd.Out();
  }
  int lines_seen = 0;
  bool worker_line = false, job_line = false;
  std::istringstream lines(ReadAll(dir + "/server.out"));
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line);
    ++lines_seen;
    EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("message")) << line;
    worker_line = worker_line || (j["component"] == "worker" && j["worker"] == "local-0");
    job_line = job_line || (j.contains("job") && j["job"] == job_id);
  }
  EXPECT_GT(lines_seen, 3);
  EXPECT_TRUE(worker_line);
  EXPECT_TRUE(job_line) << job_id;
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
    const std::string cmd = std::string("HOME=") + dir + " " + shell + " " + dir + "/probe." + shell +
                            " > " + dir + "/out.txt 2>&1";
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
