// The harness the process-level tests share: a fixture that starts a real
// tuneforge-server (with or without local workers) and separate
// tuneforge-worker processes with caches of their own (as on separate
// hosts), uploads data, creates and follows jobs through the real CLI, and
// reads their events.
//
//   class MyTest : public ClusterTest {};
//   TEST_F(MyTest, Trains) {
//     StartServer({"--heartbeat-ms=200"});
//     auto worker = StartWorker("host-a");
//     const std::string job = CreateJob(/*epochs=*/1);
//     EXPECT_EQ(WaitForJob(job, Succeeded)["state"], "JOB_STATE_SUCCEEDED");
//   }
#ifndef TUNEFORGE_TESTS_CLUSTER_H_
#define TUNEFORGE_TESTS_CLUSTER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/process.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge::testing {

using json = nlohmann::json;

// The events the CLI printed with -o json: one JSON document after another.
std::vector<json> ParseEvents(const std::string& text);
// An integer field of a proto3 JSON object (int64 fields are strings there); 0 when absent.
int64_t Int(const json& j, const char* key);
// Train losses by step, per attempt (a TrainingStarted event opens one).
std::vector<std::map<int64_t, double>> LossesByAttempt(const std::vector<json>& events);
// Each attempt's resumedFromStep, in order.
std::vector<int64_t> ResumedFrom(const std::vector<json>& events);

// Plays a worker: registers (with `token` when not empty) and takes the
// next job (waiting up to 5 s). An empty assignment, and a test failure,
// when that fails.
v1::Assignment AcquireAsWorker(v1::WorkerService::Stub& stub, const std::string& token = "");

inline bool Succeeded(const json& job) { return job.value("state", "") == "JOB_STATE_SUCCEEDED"; }
inline bool Ended(const json& job) {
  const std::string s = job.value("state", "");
  return s == "JOB_STATE_SUCCEEDED" || s == "JOB_STATE_FAILED" || s == "JOB_STATE_CANCELLED";
}

class ClusterTest : public ::testing::Test {
 protected:
  // A fresh directory named after the test, with data.json: 40 examples.
  void SetUp() override;

  void StartServer(const std::vector<std::string>& args, int local_workers = 0);
  // A tuneforge-worker with a cache of its own under dir_/host.
  std::unique_ptr<BackgroundProcess> StartWorker(const std::string& host,
                                                 const std::vector<std::string>& extra = {});
  // The dataset's name ("datasets/…") after uploading `path` (data.json by default).
  std::string UploadDataset(const std::string& path = "");
  // A job long enough to interrupt: 18 steps per epoch, a checkpoint every
  // 20 steps and at every epoch's end; `extra` flags are added.
  std::string CreateJob(int epochs = 10, const std::vector<std::string>& extra = {});
  json GetJob(const std::string& job);
  // Polls the job until `pred` holds; fails the test after timeout_s.
  json WaitForJob(const std::string& job, const std::function<bool(const json&)>& pred,
                  int timeout_s = 60);
  // Watches the job to its end; its events, each checked to come once, in order.
  std::vector<json> WatchToEnd(const std::string& job);

  std::string dir_;
  std::string dataset_;  // set by the first CreateJob
  std::unique_ptr<ServerProcess> server_;
};

}  // namespace tuneforge::testing

#endif  // TUNEFORGE_TESTS_CLUSTER_H_
