// The harness the process-level tests share: a fixture that starts a real
// tuneforge-server (with or without local workers) and separate
// tuneforge-worker processes with caches of their own (as on separate
// hosts), uploads data, creates and follows jobs through the real CLI, and
// reads their events; the end-to-end and security suites' fixtures built on
// it, and the raw gRPC calls and tokens those suites share across their files.
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

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/process.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge::testing {

using json = nlohmann::json;

// The events the CLI printed with -o json: one JSON document after another.
std::vector<json> ParseEvents(const std::string& text);
// The one JSON document a CLI command printed with -o json; the command must have succeeded.
json ParseJson(const RunResult& r);
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

// A token made by `tuneforge-server token`, and its line for a tokens file.
struct NewToken {
  std::string token;
  std::string line;  // for the tokens file
};

// A token made by the server binary itself.
NewToken MakeToken(const std::string& role, const std::string& name, const std::string& tenant);

// Calls `method` ("/tuneforge.v1.JobService/GetJob") with one message
// (`request` serialized; empty by default) as a bidirectional stream, which
// any method accepts on the wire; the status it ends with.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& token, const std::string& request = "");

// Every method of the tuneforge.v1 services: {"/pkg.Service/Method", public?}.
std::vector<std::pair<std::string, bool>> AllMethods();

// Sends `bytes` as one upload (or validation) stream of `who`, in chunks
// of 10,000 bytes; with `upload_id` set, a resumable one that is cut off
// (cancelled) once the server holds every byte, so it stays pending. The
// status the stream ended with.
grpc::Status StreamUpload(v1::DatasetService::Stub& stub, const NewToken& who,
                          const std::string& bytes, int64_t announced,
                          const std::string& upload_id = "", bool validate = false,
                          const std::function<bool()>& all_held = {});

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

// The end-to-end suite's fixture: a scheduler with one local worker, started
// for each test, driven through the CLI.
class EndToEndTest : public ClusterTest {
 protected:
  void SetUp() override;
  // A tiny-gpt2 job on `dataset`: unlike ClusterTest::CreateJob, it keeps
  // the CLI's defaults for batch size, checkpoints and samples, which these
  // tests check.
  std::string CreateJob(const std::string& dataset, int epochs);
};

// The security suite's fixture: four token holders (alice, a user of team-a;
// bob, a user of team-b; ops, an admin; pool, a worker) in a tokens file the
// server is started with.
class SecurityTest : public ClusterTest {
 protected:
  // The tokens and their file, and data.json: 16 examples.
  void SetUp() override;
  // The tokens file: the four holders' lines, then `extra` (more tokens, quotas).
  void WriteTokens(const std::string& extra);
  // A server that reads the tokens file, with `extra` flags.
  void StartServer(int workers, std::vector<std::string> extra = {});
  // The CLI as `who`'s holder.
  RunResult As(const NewToken& who, std::vector<std::string> args) const;
  // The name of the dataset `who` made of data.json.
  std::string Upload(const NewToken& who, const std::string& tls_flag = "--tls=false");
  // The name of a tiny-gpt2 job of `who`'s on `dataset`.
  std::string CreateJob(const NewToken& who, const std::string& dataset, int epochs = 1);
  // The audit log, one JSON object a line.
  std::vector<json> AuditLines() const;

  NewToken alice_, bob_, ops_, pool_;
};

}  // namespace tuneforge::testing

#endif  // TUNEFORGE_TESTS_CLUSTER_H_
