// The scheduler under faults an operator meets in the first week, each
// through real processes: a checkpoint upload cut off and then superseded,
// scheduler restarts in the middle of a job, a dataset that is not UTF-8 (and
// hostile bytes of every kind through the upload path), a full disk, a
// second scheduler on the same data, and forged page tokens and reused
// idempotency keys.
#include <signal.h>
#include <sys/mount.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/sha256.h"
#include "common/utf8.h"
#include "tests/cluster.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge::testing {
namespace {

namespace fs = std::filesystem;

class ReliabilityTest : public ClusterTest {
 protected:
  std::shared_ptr<grpc::Channel> Channel() {
    return grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  }
  std::string BlobPath(const std::string& sha256) {
    return dir_ + "/data/blobs/" + sha256.substr(0, 2) + "/" + sha256;
  }
};

std::chrono::system_clock::time_point In(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// Uploads `bytes` as the job's artifact `path` (header with size and digest,
// then one chunk), within 20 s.
grpc::Status UploadArtifact(v1::WorkerService::Stub& stub, const v1::Assignment& a,
                                   const std::string& path, const std::string& bytes) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::UploadArtifactResponse resp;
  auto writer = stub.UploadArtifact(&ctx, &resp);
  v1::UploadArtifactRequest req;
  req.mutable_header()->set_job(a.job().name());
  req.mutable_header()->set_lease(a.lease());
  req.mutable_header()->set_artifact(path);
  req.mutable_header()->set_size_bytes(static_cast<int64_t>(bytes.size()));
  req.mutable_header()->set_sha256(Sha256::Of(bytes));
  if (writer->Write(req)) {
    req.set_chunk(bytes);
    writer->Write(req);
  }
  writer->WritesDone();
  return writer->Finish();
}

// A worker SIGKILLed while uploading its hand-back checkpoint (or one whose
// upload hit a full disk) leaves a checkpoint half uploaded. The next
// checkpoint of the job supersedes it: its blobs are released while the
// upload that supersedes it holds the blob lock. Every later upload, the
// job and SIGTERM must still work.
TEST_F(ReliabilityTest, AHalfUploadedCheckpointSupersededByTheNextWedgesNothing) {
  StartServer({"--heartbeat-ms=200"});
  const std::string job = CreateJob(1);
  auto stub = v1::WorkerService::NewStub(Channel());
  const v1::Assignment a = AcquireAsWorker(*stub);
  ASSERT_EQ(a.job().name(), job);
  const std::string first(100'000, 'a'), second(100'000, 'b');
  // One file of step 1's folder arrives, then the worker is gone: pending.
  ASSERT_TRUE(UploadArtifact(*stub, a, "checkpoint/step-00000001/optimizer.safetensors", first).ok());
  ASSERT_TRUE(fs::exists(BlobPath(Sha256::Of(first))));
  // Step 2's first file supersedes it, with bytes to write...
  grpc::Status s = UploadArtifact(*stub, a, "checkpoint/step-00000002/optimizer.safetensors", second);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  // ... and step 3's by bytes the server holds already (recorded without sending).
  s = UploadArtifact(*stub, a, "checkpoint/step-00000003/optimizer.safetensors", second);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    v1::ReportEventsResponse resp;
    auto events = stub->ReportEvents(&ctx, &resp);
    v1::ReportEventsRequest req;
    req.set_job(job);
    req.set_lease(a.lease());
    v1::Checkpoint* c = req.mutable_event()->mutable_checkpoint();
    c->set_name(job + "/checkpoints/step-00000003");
    c->set_step(3);
    c->set_uploaded(true);
    ASSERT_TRUE(events->Write(req));
    events->WritesDone();
    ASSERT_TRUE(events->Finish().ok());
  }
  EXPECT_EQ(Int(GetJob(job), "checkpointStep"), 3);
  // Nothing references step 1's bytes any more: they go; step 3's stay.
  for (int i = 0; i < 100 && fs::exists(BlobPath(Sha256::Of(first))); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(fs::exists(BlobPath(Sha256::Of(first))));
  EXPECT_TRUE(fs::exists(BlobPath(Sha256::Of(second))));
  // Uploads of every kind still go through, and the server stops when told.
  WriteFile(dir_ + "/more.json", LeaveDataset(5));
  EXPECT_FALSE(UploadDataset(dir_ + "/more.json").empty());
  EXPECT_EQ(server_->Stop(20), 0) << server_->Log();
}

// Three rolling upgrades during one job (SIGTERM, SIGKILL, SIGTERM of the
// scheduler, default --max-attempts): the worker trains on through each
// outage, its events arrive exactly once, and the job succeeds on its first
// attempt with the losses of an uninterrupted run.
TEST_F(ReliabilityTest, SchedulerRestartsDuringAJobCostItNoAttempt) {
  const std::vector<std::string> args = {"--listen=127.0.0.1:" + std::to_string(FreeTcpPort()),
                                         "--heartbeat-ms=200"};
  StartServer(args);
  const std::string job = CreateJob(/*epochs=*/20);  // 360 steps
  auto worker = StartWorker("host-a");
  int64_t at = 0;
  for (int signal : {SIGTERM, SIGKILL, SIGTERM}) {
    at += 60;
    WaitForJob(job, [&](const json& j) { return Int(j["progress"], "step") >= at; }, 120);
    if (signal == SIGKILL) {
      server_->Kill();
    } else {
      ASSERT_EQ(server_->Stop(), 0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the worker trains on
    ASSERT_EQ(worker->Wait(0), -1) << "the worker exited: " << worker->Out();
    StartServer(args);
  }
  std::vector<json> events = WatchToEnd(job);  // gap-free, each event once
  json done = GetJob(job);
  ASSERT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump() << worker->Out();
  EXPECT_EQ(done["attempt"], 1) << worker->Out();
  EXPECT_EQ(Int(done, "failedAttempts"), 0);
  std::vector<std::map<int64_t, double>> attempts = LossesByAttempt(events);
  ASSERT_EQ(attempts.size(), 1u);
  int metrics = 0;
  for (const json& e : events) metrics += e.contains("metrics");
  EXPECT_EQ(metrics, 360) << "a step reported twice, or lost";
  ASSERT_EQ(attempts[0].size(), 360u);
  EXPECT_NE(worker->Out().find("sending them again once it answers"), std::string::npos)
      << "the outages were not crossed: " << worker->Out();

  // The same job again, uninterrupted: the same curve.
  const std::string again = CreateJob(/*epochs=*/20);
  std::vector<std::map<int64_t, double>> reference = LossesByAttempt(WatchToEnd(again));
  ASSERT_EQ(reference.size(), 1u);
  ASSERT_EQ(reference[0].size(), 360u);
  for (const auto& [step, loss] : reference[0]) {
    EXPECT_NEAR(attempts[0][step], loss, 1e-6) << "step " << step;
  }
}

// A file saved as Latin-1 is an invalid_utf8 problem with its line and
// column, stored as an INVALID dataset; uploading it again, validating it on
// the server and stopping the server all work.
TEST_F(ReliabilityTest, ADatasetThatIsNotUtf8IsAProblemNotAHang) {
  StartServer({});
  WriteFile(dir_ + "/latin1.jsonl",
            "{\"prompt\": \"ok\", \"completion\": \"fine\"}\n"
            "{\"prompt\": \"caf\xe9 or th\xe9?\", \"completion\": \"\xe9\"}\n");
  for (int i = 0; i < 2; ++i) {  // the second time: the same upload again
    RunResult up = server_->Cli({"-o", "json", "datasets", "upload", dir_ + "/latin1.jsonl"});
    ASSERT_NE(up.exit_code, 137) << "the upload hung";
    EXPECT_EQ(up.err.find("another stream"), std::string::npos) << up.err;
    json dataset = json::parse(up.out.substr(up.out.find('{')));
    EXPECT_EQ(dataset["state"], "DATASET_STATE_INVALID") << up.out;
    const json& problem = dataset["report"]["problems"][0];
    EXPECT_EQ(problem["code"], "invalid_utf8");
    EXPECT_EQ(Int(problem, "record"), 2);
    EXPECT_EQ(Int(problem, "line"), 2);
    EXPECT_EQ(Int(problem, "column"), 16);
    EXPECT_NE(problem.value("message", "").find("byte 0xE9"), std::string::npos) << problem;
  }
  RunResult remote = server_->Cli({"datasets", "validate", "--remote", dir_ + "/latin1.jsonl"});
  EXPECT_NE(remote.exit_code, 134) << "the CLI aborted: " << remote.err;
  EXPECT_NE(remote.out.find("invalid_utf8"), std::string::npos) << remote.out << remote.err;
  RunResult local = server_->Cli({"-o", "json", "datasets", "validate", dir_ + "/latin1.jsonl"});
  EXPECT_NE(local.exit_code, 134) << local.err;
  EXPECT_NE(local.out.find("invalid_utf8"), std::string::npos) << local.out;
  EXPECT_EQ(server_->Stop(20), 0);
}

// Hostile bytes of every kind through the real upload path (a seeded
// mutation of valid files of each format, sent in random chunks, stored and
// validated): every call ends, with a result or a clear error, and every
// string that comes back is valid UTF-8. Then the server stops when told.
TEST_F(ReliabilityTest, UploadPathFuzz) {
  StartServer({});
  auto stub = v1::DatasetService::NewStub(Channel());
  const std::vector<std::string> seeds = {
      LeaveDataset(3),
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
      "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n",
      "{\"text\": \"plain document \\u00e9\"}\n",
      "{\"prompt\": \"caf\xe9\", \"completion\": \"\xff\xfe\"}\n"};
  std::mt19937 rng(20261202);
  int runs = 0, stored = 0;
  for (int i = 0; i < 240; ++i) {
    std::string bytes = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits && !bytes.empty(); ++e) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 4) {
        case 0: bytes[at] = static_cast<char>(rng() % 256); break;                 // replace
        case 1: bytes.insert(at, 1, static_cast<char>(0x80 + rng() % 128)); break;  // a stray byte
        case 2: bytes.erase(at, 1 + rng() % 4); break;                              // delete
        case 3: bytes.insert(at, bytes.substr(rng() % bytes.size(), 8)); break;     // repeat
      }
    }
    if (bytes.empty()) continue;
    const bool validate_only = i % 3 == 0;
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    v1::Dataset dataset;
    v1::ValidateDatasetResponse validated;
    auto writer = validate_only ? stub->ValidateDataset(&ctx, &validated)
                                : stub->UploadDataset(&ctx, &dataset);
    v1::UploadDatasetRequest req;
    req.mutable_metadata()->set_display_name("fuzz-" + std::to_string(i) + ".jsonl");
    req.mutable_metadata()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    if (i % 2 == 0) req.mutable_metadata()->set_upload_id("fuzz-" + std::to_string(i));
    bool ok = writer->Write(req);
    for (size_t off = 0; ok && off < bytes.size();) {
      const size_t n = 1 + rng() % 64;
      v1::UploadDatasetRequest chunk;
      chunk.set_chunk(bytes.substr(off, n));
      ok = writer->Write(chunk);
      off += n;
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    ++runs;
    ASSERT_NE(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << "input " << i << " hung";
    ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
        << "input " << i << ": " << s.error_code() << " " << s.error_message();
    EXPECT_EQ(InvalidUtf8At(s.error_message()), std::string::npos);
    const v1::ValidationReport& report =
        validate_only ? validated.report() : dataset.report();
    for (const v1::DatasetProblem& p : report.problems()) {
      EXPECT_EQ(InvalidUtf8At(p.message()), std::string::npos) << p.code();
      EXPECT_EQ(InvalidUtf8At(p.field()), std::string::npos) << p.code();
    }
    stored += s.ok() && !validate_only;
  }
  EXPECT_EQ(runs, 240);
  EXPECT_GT(stored, 100);
  EXPECT_FALSE(UploadDataset().empty());  // and a plain upload still works
  EXPECT_EQ(server_->Stop(20), 0) << server_->Log();
}

// The set of blobs the database references (datasets, model files, job
// files), and its integrity check, read with the sqlite3 command.
std::set<std::string> Referenced(const std::string& db, std::string* integrity) {
  RunResult r = Run("/usr/bin/sqlite3",
                    {db, "SELECT sha256 FROM datasets UNION SELECT sha256 FROM model_files "
                         "UNION SELECT sha256 FROM job_files;"});
  std::set<std::string> out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) out.insert(line);
  }
  *integrity = Run("/usr/bin/sqlite3", {db, "PRAGMA integrity_check;"}).out;
  return out;
}

std::set<std::string> BlobsOnDisk(const std::string& data) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(data + "/blobs")) {
    if (e.is_regular_file()) out.insert(e.path().filename().string());
  }
  return out;
}

// The scheduler's disk fills up while a job trains. The attempt ends
// cleanly: the worker stops, and hands the job back saying the disk is full
// as soon as that can be recorded; no blob is orphaned and no message names
// the server's paths; once space is freed the job goes on and succeeds, with
// no restart of anything.
TEST_F(ReliabilityTest, AFullDiskEndsTheAttemptCleanlyAndTheJobGoesOnOnceFreed) {
  const std::string data = dir_ + "/data";
  fs::create_directories(data);
  if (mount("tuneforge-test", data.c_str(), "tmpfs", 0, "size=48m") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs to fill here (needs root): "
                 << std::strerror(errno);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{data};
  StartServer({"--heartbeat-ms=200"});
  auto worker = StartWorker("host-a");
  const std::string job = CreateJob(/*epochs=*/12);
  WaitForJob(job, [](const json& j) { return Int(j, "checkpointStep") >= 20; }, 120);

  {  // Fill it to the last byte.
    std::ofstream filler(data + "/filler", std::ios::binary);
    const std::string mb(1 << 20, 'x');
    while (filler.write(mb.data(), static_cast<std::streamsize>(mb.size())) && filler.flush()) {
    }
  }
  for (int i = 0; i < 400 && worker->Out().find("disk is full") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(worker->Out().find("disk is full"), std::string::npos) << worker->Out();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  fs::remove(data + "/filler");

  json done = WaitForJob(job, Ended, 180);
  ASSERT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump() << worker->Out();
  EXPECT_EQ(Int(done, "failedAttempts"), 0);
  std::vector<json> events = WatchToEnd(job);
  bool handed_back = false;
  for (const json& e : events) {
    const std::string text = e.dump();
    EXPECT_EQ(text.find(dir_), std::string::npos) << "a server path in " << text;
    if (!e.contains("stateChange")) continue;
    const std::string reason = e["stateChange"].value("reason", "");
    handed_back = handed_back || (e["stateChange"]["to"] == "JOB_STATE_QUEUED" &&
                                  reason.find("disk is full") != std::string::npos);
  }
  EXPECT_TRUE(handed_back) << "no hand-back saying the disk was full";
  EXPECT_GE(ResumedFrom(events).size(), 2u);
  // Every blob on disk is referenced, every referenced blob is there.
  std::string integrity;
  std::set<std::string> referenced, on_disk;
  for (int i = 0; i < 100; ++i) {
    referenced = Referenced(data + "/tuneforge.db", &integrity);
    on_disk = BlobsOnDisk(data);
    if (referenced == on_disk) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(referenced, on_disk);
  EXPECT_EQ(integrity, "ok\n");
  EXPECT_EQ(server_->Stop(20), 0);
}

// A second scheduler on the same data directory is refused, naming the
// first one's pid; once the first is gone (even SIGKILLed), it starts.
TEST_F(ReliabilityTest, OneSchedulerPerDataDirectory) {
  StartServer({});
  RunResult second = testing::Run("tuneforge-server",
                         {"--data-dir=" + dir_ + "/data", "--listen=127.0.0.1:0"}, {}, 30);
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE((second.out + second.err)
                .find("is in use by another tuneforge-server (pid " +
                      std::to_string(server_->pid()) + ")"),
            std::string::npos)
      << second.out << second.err;
  const std::string job = CreateJob(1);
  server_->Kill();
  StartServer({});  // the kernel dropped the dead one's lock
  EXPECT_EQ(GetJob(job)["state"], "JOB_STATE_QUEUED");
}

// Page tokens are opaque and bound to the query that made them; a reused
// request_id with other settings is refused, naming what differs.
TEST_F(ReliabilityTest, PageTokensAndRequestIdsCannotBeForged) {
  StartServer({});
  for (int i = 0; i < 3; ++i) CreateJob(1);
  auto jobs = v1::JobService::NewStub(Channel());
  auto list = [&](const std::string& token, v1::JobState state, v1::ListJobsResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    v1::ListJobsRequest req;
    req.set_page_size(1);
    req.set_page_token(token);
    req.set_state(state);
    return jobs->ListJobs(&ctx, req, out);
  };
  v1::ListJobsResponse first, second;
  ASSERT_TRUE(list("", v1::JOB_STATE_UNSPECIFIED, &first).ok());
  ASSERT_FALSE(first.next_page_token().empty());
  ASSERT_TRUE(list(first.next_page_token(), v1::JOB_STATE_UNSPECIFIED, &second).ok());
  ASSERT_EQ(second.jobs_size(), 1);
  EXPECT_NE(second.jobs(0).name(), first.jobs(0).name());
  std::string altered = first.next_page_token();
  altered[altered.size() / 3] = altered[altered.size() / 3] == 'a' ? 'b' : 'a';
  const std::string job_id = first.jobs(0).name().substr(5);
  for (const std::string& token : {std::string("garbage"), altered, job_id}) {
    v1::ListJobsResponse ignored;
    grpc::Status s = list(token, v1::JOB_STATE_UNSPECIFIED, &ignored);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << token;
  }
  {
    v1::ListJobsResponse ignored;  // another query's token
    EXPECT_EQ(list(first.next_page_token(), v1::JOB_STATE_QUEUED, &ignored).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {  // an id as the token of another listing: no oracle
    auto datasets = v1::DatasetService::NewStub(Channel());
    grpc::ClientContext ctx;
    v1::ListDatasetsRequest req;
    req.set_page_token(dataset_.substr(9));
    v1::ListDatasetsResponse ignored;
    EXPECT_EQ(datasets->ListDatasets(&ctx, req, &ignored).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  auto create = [&](int epochs, v1::Job* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    v1::CreateJobRequest req;
    req.mutable_job()->set_training_dataset(dataset_);
    req.mutable_job()->set_base_model("models/tiny-gpt2");
    req.mutable_job()->set_request_id("nightly-2026-12-02");
    req.mutable_job()->mutable_hyperparameters()->set_epochs(epochs);
    return jobs->CreateJob(&ctx, req, out);
  };
  v1::Job made, retried, other;
  ASSERT_TRUE(create(1, &made).ok());
  ASSERT_TRUE(create(1, &retried).ok());
  EXPECT_EQ(retried.name(), made.name());
  grpc::Status s = create(2, &other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(s.error_message().find("hyperparameters.epochs"), std::string::npos)
      << s.error_message();
}

}  // namespace
}  // namespace tuneforge::testing
