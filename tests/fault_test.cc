// Faults with real processes and real signals: a worker killed with SIGKILL
// mid-run, a worker stopped with SIGTERM (a Kubernetes eviction), a job
// paused and resumed, the scheduler itself killed with SIGKILL and started
// again, and a worker that stops making progress. Workers run as separate
// `tuneforge-worker` processes with caches of their own, as on separate
// hosts: a job resumed by another worker can only have come from the
// checkpoint the first one uploaded to the scheduler.
#include <signal.h>

#include <chrono>
#include <map>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/cluster.h"

namespace tuneforge::testing {
namespace {

class FaultTest : public ClusterTest {};

// The second attempt starts at the checkpoint and repeats exactly the steps
// the first ran past it: the loss curve is one curve.
void ExpectContinuousLosses(const std::vector<json>& events, int64_t checkpoint,
                            int min_overlap = 0) {
  std::vector<std::map<int64_t, double>> attempts = LossesByAttempt(events);
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[1].begin()->first, checkpoint + 1);
  int overlap = 0;
  for (const auto& [step, loss] : attempts[1]) {
    auto first = attempts[0].find(step);
    if (first == attempts[0].end()) continue;
    EXPECT_NEAR(loss, first->second, 1e-6) << "step " << step;
    ++overlap;
  }
  std::map<int64_t, double> all = attempts[0];
  all.insert(attempts[1].begin(), attempts[1].end());
  EXPECT_EQ(all.size(), static_cast<size_t>(all.rbegin()->first)) << "a step is missing";
  EXPECT_EQ(all.rbegin()->first, 180);
  EXPECT_GE(overlap, min_overlap);
}

TEST_F(FaultTest, WorkerKilledMidRunResumesOnAnotherFromItsUploadedCheckpoint) {
  StartServer({"--lease-seconds=2", "--heartbeat-ms=200"});
  const std::string job = CreateJob();
  auto a = StartWorker("host-a");
  // Killed a few steps past a checkpoint: those steps run twice, and must
  // give the same losses both times.
  WaitForJob(job, [](const json& j) {
    return Int(j, "checkpointStep") >= 20 && Int(j["progress"], "step") >= Int(j, "checkpointStep") + 4;
  });
  a->Signal(SIGKILL);
  EXPECT_EQ(a->Wait(10), 128 + SIGKILL);
  const int64_t checkpoint = Int(GetJob(job), "checkpointStep");

  auto b = StartWorker("host-b");  // another cache: it can only fetch the checkpoint
  std::vector<json> events = WatchToEnd(job);
  json done = GetJob(job);
  ASSERT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump() << server_->Log() << b->Err();
  EXPECT_EQ(done["attempt"], 2);
  EXPECT_EQ(done["failedAttempts"], 1);
  EXPECT_EQ(ResumedFrom(events), (std::vector<int64_t>{0, checkpoint}));
  bool requeued = false;
  for (const json& e : events) {
    if (!e.contains("stateChange")) continue;
    const std::string reason = e["stateChange"].value("reason", "");
    requeued = requeued || (reason.find("lease expired") != std::string::npos &&
                            reason.find("resumes from step-") != std::string::npos);
  }
  EXPECT_TRUE(requeued);
  ExpectContinuousLosses(events, checkpoint, /*min_overlap=*/4);
}

TEST_F(FaultTest, SigtermHandsTheJobBackWithoutLosingSteps) {
  // A lease far longer than the test: the job comes back because the worker
  // hands it back, not because a lease ran out.
  StartServer({"--lease-seconds=300", "--heartbeat-ms=200"});
  const std::string job = CreateJob();
  auto a = StartWorker("host-a");
  WaitForJob(job, [](const json& j) { return Int(j["progress"], "step") >= 25; });
  a->Signal(SIGTERM);
  EXPECT_EQ(a->Wait(30), 0) << a->Err();
  json back = GetJob(job);
  EXPECT_EQ(back["state"], "JOB_STATE_QUEUED") << back.dump();
  EXPECT_EQ(Int(back, "failedAttempts"), 0);
  // The checkpoint it wrote on the way out is at the last step it reported.
  const int64_t checkpoint = Int(back, "checkpointStep");
  EXPECT_EQ(checkpoint, Int(back["progress"], "step"));
  EXPECT_NE((a->Out() + a->Err()).find("handed back (the worker is stopping)"), std::string::npos)
      << a->Out() << a->Err();

  auto b = StartWorker("host-b");
  std::vector<json> events = WatchToEnd(job);
  EXPECT_EQ(GetJob(job)["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(ResumedFrom(events), (std::vector<int64_t>{0, checkpoint}));
  std::vector<std::map<int64_t, double>> attempts = LossesByAttempt(events);
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].rbegin()->first, checkpoint);  // nothing run twice, nothing lost
  ExpectContinuousLosses(events, checkpoint);
}

TEST_F(FaultTest, PausedJobFreesItsWorkerAndResumesWhereItStopped) {
  StartServer({"--heartbeat-ms=200"}, /*local_workers=*/1);
  const std::string job = CreateJob();
  WaitForJob(job, [](const json& j) { return Int(j["progress"], "step") >= 25; });
  RunResult pause = server_->Cli({"jobs", "pause", job});
  EXPECT_EQ(pause.exit_code, 0) << pause.err;
  json paused = WaitForJob(job, [](const json& j) { return j["state"] == "JOB_STATE_PAUSED"; });
  const int64_t checkpoint = Int(paused, "checkpointStep");
  EXPECT_GE(checkpoint, 25);
  EXPECT_NE(paused.value("waitReason", "").find("paused"), std::string::npos);
  // Of the checkpoints it reported, the scheduler holds the newest: the one
  // it resumes from.
  RunResult listed = server_->Cli({"-o", "json", "jobs", "checkpoints", job});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  json checkpoints = json::parse(listed.out)["checkpoints"];
  ASSERT_GE(checkpoints.size(), 2u);
  int held = 0;
  for (const json& c : checkpoints) {
    if (!c.value("held", false)) continue;
    ++held;
    EXPECT_EQ(Int(c, "step"), checkpoint);
  }
  EXPECT_EQ(held, 1);
  EXPECT_EQ(Int(checkpoints.back(), "step"), checkpoint);
  // The worker is free: another job runs to the end meanwhile.
  const std::string other = CreateJob(1);
  EXPECT_EQ(WaitForJob(other, [](const json& j) { return j["state"] == "JOB_STATE_SUCCEEDED"; })
                ["state"],
            "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(GetJob(job)["state"], "JOB_STATE_PAUSED");

  EXPECT_EQ(server_->Cli({"jobs", "resume", job}).exit_code, 0);
  std::vector<json> events = WatchToEnd(job);
  EXPECT_EQ(GetJob(job)["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(ResumedFrom(events), (std::vector<int64_t>{0, checkpoint}));
  ExpectContinuousLosses(events, checkpoint);
}

// The scheduler dies on the spot and starts again on the same data: no job
// or event is lost, the worker comes back, and a watcher that reconnects
// sees every event exactly once.
TEST_F(FaultTest, SchedulerKilledAndRestartedLosesNothing) {
  const std::string listen = "--listen=127.0.0.1:" + std::to_string(FreeTcpPort());
  StartServer({listen, "--lease-seconds=2", "--heartbeat-ms=200"});
  const std::string job = CreateJob();
  auto worker = StartWorker("host-a");
  BackgroundProcess watcher(
      "tuneforge", {"--addr=" + server_->addr(), "-o", "json", "jobs", "watch", job},
      dir_ + "/watcher");
  WaitForJob(job, [](const json& j) { return Int(j["progress"], "step") >= 45; });
  server_->Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  StartServer({listen, "--lease-seconds=2", "--heartbeat-ms=200"});

  EXPECT_EQ(watcher.Wait(180), 0) << watcher.Err() << server_->Log() << worker->Err();
  json done = GetJob(job);
  EXPECT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump();
  std::vector<json> events = ParseEvents(watcher.Out());
  ASSERT_FALSE(events.empty());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(Int(events[i], "sequence"), static_cast<int64_t>(i + 1)) << "gap or duplicate";
  }
  EXPECT_NE(watcher.Err().find("reconnecting after #"), std::string::npos) << watcher.Err();
  // The same events replayed from the restarted server's store.
  std::vector<json> replay = WatchToEnd(job);
  ASSERT_EQ(replay.size(), events.size());
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(replay[i], events[i]);
  std::vector<std::map<int64_t, double>> attempts = LossesByAttempt(events);
  std::map<int64_t, double> all;
  for (const auto& a : attempts) all.insert(a.begin(), a.end());
  EXPECT_EQ(all.size(), 180u);
}

// SIGTERM to the scheduler: its watchers are told why their stream ends and
// where to continue, it exits 0, its local worker hands the job back, and
// once started again the job runs to the end.
TEST_F(FaultTest, SchedulerSigtermEndsStreamsClearlyAndLosesNoJob) {
  StartServer({"--heartbeat-ms=200"}, /*local_workers=*/1);
  const std::string job = CreateJob();
  BackgroundProcess watcher(
      "tuneforge", {"--addr=" + server_->addr(), "-o", "json", "jobs", "watch", job},
      dir_ + "/watcher");
  WaitForJob(job, [](const json& j) { return Int(j["progress"], "step") >= 20; });
  EXPECT_EQ(server_->Stop(), 0) << server_->Log();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (watcher.Err().find("shutting down") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(watcher.Err().find("the server is shutting down; watch again with after_sequence="),
            std::string::npos)
      << watcher.Err();
  watcher.Signal(SIGKILL);

  StartServer({"--heartbeat-ms=200"}, 1);
  json back = GetJob(job);
  EXPECT_NE(back["state"], "JOB_STATE_RUNNING") << back.dump();  // handed back, not orphaned
  EXPECT_GE(Int(back, "checkpointStep"), 20);
  std::vector<json> events = WatchToEnd(job);
  EXPECT_EQ(GetJob(job)["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(ResumedFrom(events).back(), Int(back, "checkpointStep"));
}

// A worker that heartbeats but completes no step is STALLED; after
// max_attempts such attempts the job fails listing each one.
TEST_F(FaultTest, StalledWorkerFailsTheAttemptAndTheJobListsEveryReason) {
  StartServer({"--stall-seconds=1", "--max-attempts=2", "--heartbeat-ms=200"}, 1);
  // small-gpt2 on rows of 512 tokens: its first step takes longer than a second here.
  std::string long_text;
  for (int i = 0; i < 8; ++i) {
    long_text += json({{"text", std::string(600, static_cast<char>('a' + i))}}).dump() + "\n";
  }
  WriteFile(dir_ + "/long.jsonl", long_text);
  RunResult up = server_->Cli({"-o", "name", "datasets", "upload", dir_ + "/long.jsonl"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  RunResult r = server_->Cli({"-o", "name", "jobs", "create", "--model", "small-gpt2",
                              "--training-dataset", up.out.substr(0, up.out.find('\n')),
                              "--max-seq-len", "512", "--validation-split", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string job = r.out.substr(0, r.out.find('\n'));
  json failed = WaitForJob(job, [](const json& j) { return j["state"] == "JOB_STATE_FAILED"; }, 120);
  const std::string error = failed.value("error", "");
  EXPECT_EQ(error.rfind("2 of 2 attempts failed: attempt 1: STALLED: worker ", 0), 0u) << error;
  EXPECT_NE(error.find("; attempt 2: STALLED: worker "), std::string::npos) << error;
  EXPECT_EQ(failed["attemptErrors"].size(), 2u);
}

}  // namespace
}  // namespace tuneforge::testing

namespace tuneforge::testing {
namespace {

grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& addr,
                                                             const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  if (!stub->Check(&ctx, request, &response).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return response.status();
}

// What Kubernetes relies on: a worker is alive while it runs and ready
// while it is registered; and one that cannot finish stopping (its
// scheduler frozen mid-upload) exits by itself after --stop-timeout-seconds,
// inside the pod's grace period. Its flags come from a --config file.
TEST_F(FaultTest, WorkerProbesAndStopTimeout) {
  using Status = grpc::health::v1::HealthCheckResponse;
  const int port = FreeTcpPort();
  WriteFile(dir_ + "/worker.toml",
            "server = \"127.0.0.1:" + std::to_string(port) + "\"\n"
            "health-listen = \"127.0.0.1:0\"\n"
            "stop-timeout-seconds = 2\n"
            "cache-dir = \"" + dir_ + "/cache\"\n"
            "threads = 1\n"
            "wait-ms = 500\n");
  BackgroundProcess worker("tuneforge-worker", {"--config=" + dir_ + "/worker.toml"},
                           dir_ + "/worker");
  std::string health;
  for (int i = 0; i < 100 && health.empty(); ++i) {
    const std::string out = worker.Out();
    const size_t at = out.find("health on port ");
    if (at != std::string::npos) {
      health = "127.0.0.1:" + out.substr(at + 15, out.find('\n', at) - at - 15);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ASSERT_FALSE(health.empty()) << worker.Out() << worker.Err();
  // No scheduler yet: alive, not ready.
  EXPECT_EQ(Health(health, "liveness"), Status::SERVING);
  EXPECT_EQ(Health(health, ""), Status::NOT_SERVING);

  StartServer({"--listen=127.0.0.1:" + std::to_string(port), "--heartbeat-ms=200"});
  bool ready = false;
  for (int i = 0; i < 200 && !ready; ++i) {
    ready = Health(health, "") == Status::SERVING;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(ready) << worker.Out();

  const std::string job = CreateJob();
  WaitForJob(job, [](const json& j) { return Int(j["progress"], "step") >= 3; });
  server_->Signal(SIGSTOP);  // the checkpoint upload after SIGTERM cannot finish
  const auto stopped = std::chrono::steady_clock::now();
  worker.Signal(SIGTERM);
  const int code = worker.Wait(30);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  server_->Signal(SIGCONT);
  EXPECT_EQ(code, 3) << worker.Out();
  EXPECT_GE(seconds, 1.9);
  EXPECT_LT(seconds, 15);
  EXPECT_NE(worker.Out().find("did not stop within 2 s"), std::string::npos) << worker.Out();
}

}  // namespace
}  // namespace tuneforge::testing
