// End to end, a job's life: a real scheduler with a real local worker on a
// free loopback port, driven through the real `tuneforge` CLI (and a Node
// client of its own), uploads a dataset, creates, watches, polls and cancels
// jobs, trains LoRA adapters, reports checkpoints and early stopping, and
// passes the engine's training options on to the worker.
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "tests/cluster.h"
#include "tuneforge/v1/job.grpc.pb.h"

namespace tuneforge::testing {
namespace {

TEST_F(EndToEndTest, UploadCreateAndWatchUntilSucceeded) {
  const std::string dataset = UploadDataset(dir_ + "/data.json");
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

// Checkpoints and early stopping reach the event stream: the job checkpoints
// as asked, stops when validation loss stops improving, says why, and
// succeeds with a model.
TEST_F(EndToEndTest, CheckpointsAndEarlyStoppingAreReported) {
  const std::string dataset = UploadDataset(dir_ + "/data.json");
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
  const std::string dataset = UploadDataset(dir_ + "/data.json");
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
  const std::string dataset = UploadDataset(dir_ + "/data.json");
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

// The engine's options travel as job fields to the worker, which reports
// what it trains with; a wrong value is refused at creation naming it.
TEST_F(EndToEndTest, TrainingOptionsReachTheWorker) {
  const std::string dataset = UploadDataset(dir_ + "/data.json");
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
  const std::string dataset = UploadDataset(dir_ + "/data.json");
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
  for (size_t at = 0; (at = watch.out.find("\"sequence\"", at)) != std::string::npos; ++at) {
    ++events;
  }
  EXPECT_GT(events, 760u);
  EXPECT_GT(watch.out.size(), 256u << 10);
  stalled.TryCancel();
}

}  // namespace
}  // namespace tuneforge::testing
