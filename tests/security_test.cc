// Security end to end: real tuneforge-server processes with a tokens file,
// TLS certificates made by openssl here, real workers and the real CLI.
// Every RPC of every tuneforge.v1 service is called raw (with the generic
// stub, an empty request) to prove each one checks its caller.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <thread>

#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/model.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

#include "common/sha256.h"
#include "tests/cluster.h"

namespace tuneforge::testing {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string Sha256Hex(const std::string& bytes) { return Sha256::Of(bytes); }

struct NewToken {
  std::string token;
  std::string line;  // for the tokens file
};

// A token made by the server binary itself.
NewToken MakeToken(const std::string& role, const std::string& name, const std::string& tenant) {
  RunResult r = testing::Run("tuneforge-server",
                    {"token", "--role=" + role, "--name=" + name, "--tenant=" + tenant});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  NewToken t;
  std::getline(lines, t.token);
  std::getline(lines, t.line);
  EXPECT_EQ(t.token.rfind("tf_", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find(t.token, t.token.size()), std::string::npos)
      << "the tokens-file line must not hold the token itself";
  return t;
}

// Calls `method` ("/tuneforge.v1.JobService/GetJob") with one message
// (`request` serialized; empty by default)
// as a bidirectional stream, which any method accepts on the wire; the
// status it ends with.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& token, const std::string& request = "") {
  class Call : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Call(const std::string& bytes) : bytes_(bytes) {}
    void Start() {
      grpc::Slice slice(bytes_);
      request_ = grpc::ByteBuffer(&slice, 1);
      StartWrite(&request_);
      StartWritesDone();
      StartRead(&response_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (ok) StartRead(&response_);
    }
    void OnDone(const grpc::Status& s) override { done_.set_value(s); }
    std::future<grpc::Status> Result() { return done_.get_future(); }

   private:
    const std::string bytes_;
    grpc::ByteBuffer request_, response_;
    std::promise<grpc::Status> done_;
  };
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  Call call(request);
  std::future<grpc::Status> result = call.Result();
  stub.PrepareBidiStreamingCall(&ctx, method, grpc::StubOptions(), &call);
  call.Start();
  return result.get();
}

// Every method of the tuneforge.v1 services: {"/pkg.Service/Method", public?}.
std::vector<std::pair<std::string, bool>> AllMethods() {
  // A message of each file brings its descriptors into the pool.
  (void)v1::Dataset::descriptor();
  (void)v1::Model::descriptor();
  (void)v1::Job::descriptor();
  (void)v1::RegisterWorkerRequest::descriptor();
  std::vector<std::pair<std::string, bool>> methods;
  for (const char* name : {"tuneforge.v1.DatasetService", "tuneforge.v1.ModelService",
                           "tuneforge.v1.JobService", "tuneforge.v1.WorkerService"}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    EXPECT_NE(service, nullptr) << name;
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      methods.emplace_back("/" + std::string(name) + "/" + service->method(i)->name(),
                           std::string(name) != "tuneforge.v1.WorkerService");
    }
  }
  return methods;
}

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    alice_ = MakeToken("user", "alice", "team-a");
    bob_ = MakeToken("user", "bob", "team-b");
    ops_ = MakeToken("admin", "ops", "ops");
    pool_ = MakeToken("worker", "pool", "-");
    WriteTokens("");
    WriteFile(dir_ + "/data.json", LeaveDataset(16));
  }

  void WriteTokens(const std::string& extra) {
    // Written aside and renamed, as a Kubernetes Secret is updated.
    WriteFile(dir_ + "/tokens.tmp", "# role name tenant digest\n" + alice_.line + "\n" +
                                        bob_.line + "\n" + ops_.line + "\n" + pool_.line + "\n" +
                                        extra);
    fs::rename(dir_ + "/tokens.tmp", dir_ + "/tokens");
  }

  void StartServer(int workers, std::vector<std::string> extra = {}) {
    extra.push_back("--tokens-file=" + dir_ + "/tokens");
    server_ = std::make_unique<ServerProcess>(dir_, workers, extra);
  }

  // The CLI as `token`'s holder.
  RunResult As(const NewToken& who, std::vector<std::string> args) const {
    args.insert(args.begin(), "--token=" + who.token);
    return server_->Cli(args);
  }

  std::string Upload(const NewToken& who, const std::string& tls_flag = "--tls=false") {
    RunResult r = As(who, {tls_flag, "-o", "name", "datasets", "upload", dir_ + "/data.json"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }

  std::string CreateJob(const NewToken& who, const std::string& dataset, int epochs = 1) {
    RunResult r = As(who, {"-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                           "--training-dataset", dataset, "--epochs", std::to_string(epochs),
                           "--max-seq-len", "64", "--batch-size", "8"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }

  std::vector<json> AuditLines() const {
    std::vector<json> lines;
    std::istringstream in(ReadAll(dir_ + "/data/audit.log"));
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    return lines;
  }

  std::string dir_;
  NewToken alice_, bob_, ops_, pool_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(SecurityTest, EveryRpcChecksItsCaller) {
  StartServer(0);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  const auto methods = AllMethods();
  ASSERT_GE(methods.size(), 25u);
  for (const auto& [method, is_public] : methods) {
    SCOPED_TRACE(method);
    EXPECT_EQ(RawCall(channel, method, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(RawCall(channel, method, "tf_not-a-token").error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    // Each role only where it belongs.
    for (const NewToken* t : {&alice_, &ops_}) {
      grpc::Status s = RawCall(channel, method, t->token);
      if (is_public) {
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
      } else {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
      }
    }
    grpc::Status worker = RawCall(channel, method, pool_.token);
    if (is_public) {
      EXPECT_EQ(worker.error_code(), grpc::StatusCode::PERMISSION_DENIED) << worker.error_message();
    } else {
      EXPECT_NE(worker.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_NE(worker.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
  }
  // The CLI says so with exit code 4.
  RunResult none = server_->Cli({"datasets", "list"});
  EXPECT_EQ(none.exit_code, 4) << none.err;
  EXPECT_NE(none.err.find("no token"), std::string::npos) << none.err;
  RunResult worker = As(pool_, {"jobs", "list"});
  EXPECT_EQ(worker.exit_code, 4);
  EXPECT_NE(worker.err.find("worker tokens call only the worker API"), std::string::npos);
}

TEST_F(SecurityTest, ATenantSeesNothingOfAnother) {
  StartServer(1);
  const std::string dataset = Upload(alice_);
  const std::string job = CreateJob(alice_, dataset);
  RunResult watched = As(alice_, {"jobs", "watch", job});
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;  // trained by the local worker
  json done = json::parse(As(alice_, {"-o", "json", "jobs", "get", job}).out);
  ASSERT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump();
  const std::string model = done["resultModel"];
  const std::string id = job.substr(job.find('/') + 1);

  // Bob's view of Alice's things is that of things that do not exist: the
  // same exit code and the same words as for a made-up id.
  auto same_as_missing = [&](std::vector<std::string> args, const std::string& real,
                             const std::string& fake) {
    SCOPED_TRACE(::testing::PrintToString(args));
    RunResult theirs = As(bob_, args);
    for (std::string& a : args) {
      if (a == real) a = fake;
    }
    RunResult missing = As(bob_, args);
    EXPECT_EQ(theirs.exit_code, 4) << theirs.err;
    EXPECT_EQ(missing.exit_code, 4) << missing.err;
    std::string message = theirs.err;
    size_t at;
    while ((at = message.find(real.substr(real.find('/') + 1))) != std::string::npos) {
      message.replace(at, real.size() - real.find('/') - 1, fake.substr(fake.find('/') + 1));
    }
    EXPECT_EQ(message, missing.err);
  };
  const std::string fake_dataset = "datasets/d000000000000";
  const std::string fake_job = "jobs/j000000000000";
  same_as_missing({"datasets", "get", dataset}, dataset, fake_dataset);
  same_as_missing({"datasets", "delete", dataset}, dataset, fake_dataset);
  for (const char* verb : {"get", "cancel", "pause", "resume", "watch", "checkpoints"}) {
    same_as_missing({"jobs", verb, job}, job, fake_job);
  }
  {
    auto stub = v1::JobService::NewStub(
        grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + bob_.token);
    v1::ListJobEventsRequest request;
    request.set_name(job);
    v1::ListJobEventsResponse events;
    grpc::Status s = stub->ListJobEvents(&ctx, request, &events);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(s.error_message(), "job " + id + " not found");
    EXPECT_EQ(events.events_size(), 0);
  }
  same_as_missing({"jobs", "download", job, "--artifact", "metrics", "--dir", dir_ + "/dl"}, job,
                  fake_job);
  same_as_missing({"models", "get", model}, model, "models/ft-j000000000000");
  same_as_missing({"models", "delete", model}, model, "models/ft-j000000000000");
  EXPECT_FALSE(fs::exists(dir_ + "/dl/metrics.csv"));

  // Nor does it list, or build on, any of them.
  EXPECT_EQ(As(bob_, {"-o", "name", "datasets", "list"}).out, "");
  EXPECT_EQ(As(bob_, {"-o", "name", "jobs", "list"}).out, "");
  EXPECT_EQ(As(bob_, {"-o", "name", "models", "list"}).out.find(model), std::string::npos);
  RunResult on_theirs = As(bob_, {"jobs", "create", "--model", "tiny-gpt2",
                                  "--training-dataset", dataset});
  EXPECT_EQ(on_theirs.exit_code, 2);
  EXPECT_NE(on_theirs.err.find("does not exist"), std::string::npos) << on_theirs.err;
  const std::string bobs = Upload(bob_);
  for (const auto& [base, words] : {std::pair{model, "no model"}, {job, "does not exist"}}) {
    RunResult continued = As(bob_, {"jobs", "create", "--model", base, "--training-dataset", bobs});
    EXPECT_EQ(continued.exit_code, 2) << base;
    EXPECT_NE(continued.err.find(words), std::string::npos) << continued.err;
  }
  // Request ids are per tenant: Bob's retry key does not find Alice's job.
  // Alice and the admin still see hers; the admin sees Bob's too.
  EXPECT_EQ(As(alice_, {"datasets", "get", dataset}).exit_code, 0);
  std::string listed = As(ops_, {"-o", "name", "datasets", "list"}).out;
  EXPECT_NE(listed.find(dataset), std::string::npos);
  EXPECT_NE(listed.find(bobs), std::string::npos);
  EXPECT_NE(As(ops_, {"-o", "name", "jobs", "list"}).out.find(job), std::string::npos);

  // The worker list names the job a worker trains only to its tenant.
  const std::string running = CreateJob(alice_, dataset, 200);
  bool busy = false;
  for (int i = 0; i < 200 && !busy; ++i) {
    busy = As(alice_, {"-o", "json", "workers", "list"}).out.find(running) != std::string::npos;
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(busy);
  // Nor that the worker is busy: to Bob it is unavailable, as one away is.
  RunResult bobs_view = As(bob_, {"-o", "json", "workers", "list"});
  EXPECT_NE(bobs_view.out.find("\"unavailable\""), std::string::npos) << bobs_view.out;
  EXPECT_EQ(bobs_view.out.find("\"busy\""), std::string::npos) << bobs_view.out;
  EXPECT_EQ(bobs_view.out.find(running), std::string::npos) << bobs_view.out;
  EXPECT_EQ(bobs_view.out.find("tokensPerSecond"), std::string::npos) << bobs_view.out;
  EXPECT_EQ(As(alice_, {"jobs", "cancel", running}).exit_code, 0);

  // Every change was audited, the refused ones too.
  bool created = false, refused = false;
  for (const json& line : AuditLines()) {
    created = created || (line["method"] == "CreateJob" && line["caller"] == "alice" &&
                          line["tenant"] == "team-a" && line["code"] == "OK" &&
                          line["resource"] == job);
    refused = refused || (line["method"] == "DeleteDataset" && line["caller"] == "bob" &&
                          line["code"] == "NOT_FOUND" && line["resource"] == dataset);
    EXPECT_TRUE(line.contains("time") && line.contains("peer")) << line.dump();
  }
  EXPECT_TRUE(created);
  EXPECT_TRUE(refused);
}

// A worker token reaches only what the job it holds a lease on may read: no
// other tenant's dataset by its digest, neither fetched nor passed off as
// an upload ("bytes already held") into this job's output. Every worker call
// that is refused is audited, and a token of the wrong role is audited with
// its holder's name and tenant.
TEST_F(SecurityTest, AWorkerTokenReachesOnlyTheBlobsOfItsLeasedJob) {
  StartServer(0);
  const std::string bytes_a = ReadAll(dir_ + "/data.json");
  const std::string bytes_b = LeaveDataset(17);
  WriteFile(dir_ + "/bob.json", bytes_b);
  const std::string dataset = Upload(alice_);
  RunResult up = As(bob_, {"-o", "name", "datasets", "upload", dir_ + "/bob.json"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::string job = CreateJob(alice_, dataset);

  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::WorkerService::NewStub(channel);
  auto context = [&](grpc::ClientContext& ctx, const NewToken& who) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", "Bearer " + who.token);
  };
  const v1::Assignment a = AcquireAsWorker(*stub, pool_.token);
  ASSERT_EQ(a.job().name(), job);
  auto fetch = [&](const std::string& sha256, const std::string& job_name) {
    grpc::ClientContext ctx;
    context(ctx, pool_);
    v1::FetchBlobRequest req;
    req.set_sha256(sha256);
    req.set_job(job_name);
    req.set_lease(a.lease());
    auto reader = stub->FetchBlob(&ctx, req);
    std::string got;
    v1::BlobChunk chunk;
    while (reader->Read(&chunk)) got += chunk.data();
    grpc::Status s = reader->Finish();
    return std::make_pair(s, got);
  };
  auto [mine, bytes] = fetch(Sha256Hex(bytes_a), job);
  EXPECT_TRUE(mine.ok()) << mine.error_message();
  EXPECT_EQ(bytes, bytes_a);
  const std::string made_up(64, 'e');
  auto [theirs, leaked] = fetch(Sha256Hex(bytes_b), job);
  auto [missing, nothing] = fetch(made_up, job);
  EXPECT_EQ(theirs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(leaked.empty());
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  std::string message = theirs.error_message();
  message.replace(message.find(Sha256Hex(bytes_b)), 64, made_up);
  EXPECT_EQ(message, missing.error_message()) << "an existence oracle";
  EXPECT_EQ(fetch(Sha256Hex(bytes_a), "").first.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  {  // Bob's dataset named by digest and size as this job's output, no bytes sent.
    grpc::ClientContext ctx;
    context(ctx, pool_);
    v1::UploadArtifactResponse resp;
    auto writer = stub->UploadArtifact(&ctx, &resp);
    v1::UploadArtifactRequest req;
    req.mutable_header()->set_job(job);
    req.mutable_header()->set_lease(a.lease());
    req.mutable_header()->set_artifact("metrics.csv");
    req.mutable_header()->set_sha256(Sha256Hex(bytes_b));
    req.mutable_header()->set_size_bytes(static_cast<int64_t>(bytes_b.size()));
    writer->Write(req);
    writer->WritesDone();
    EXPECT_FALSE(writer->Finish().ok()) << "another tenant's bytes were recorded";
  }
  {  // A user token on the worker API.
    grpc::ClientContext ctx;
    context(ctx, alice_);
    v1::HeartbeatRequest req;
    req.set_job(job);
    v1::HeartbeatResponse resp;
    EXPECT_EQ(stub->Heartbeat(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  bool fetch_refused = false, upload_refused = false, wrong_role = false;
  for (const json& line : AuditLines()) {
    fetch_refused |= line["method"] == "FetchBlob" && line["code"] == "NOT_FOUND" &&
                     line["caller"] == "pool" && line["role"] == "worker";
    upload_refused |= line["method"] == "UploadArtifact" && line["code"] != "OK";
    wrong_role |= line["method"] == "Heartbeat" && line["code"] == "PERMISSION_DENIED" &&
                  line["caller"] == "alice" && line["tenant"] == "team-a";
  }
  EXPECT_TRUE(fetch_refused);
  EXPECT_TRUE(upload_refused);
  EXPECT_TRUE(wrong_role) << ReadAll(dir_ + "/data/audit.log");
}

TEST_F(SecurityTest, QuotasAndSizeLimitsRefuseMidStreamAndLeaveNothing) {
  WriteTokens("quota team-b stored_bytes=3000 datasets=1 queued_jobs=1\n");
  StartServer(0, {"--max-upload-bytes=20000"});
  auto count_blobs = [&] {
    int n = 0;
    for (const char* sub : {"/data/blobs", "/data/tmp"}) {
      for (const auto& e : fs::recursive_directory_iterator(dir_ + sub)) n += e.is_regular_file();
    }
    return n;
  };
  // A stream that claims 1,000 bytes and keeps sending: refused once it
  // passes the limit, not at its end.
  auto upload_raw = [&](const NewToken& who, int chunks) {
    auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
    auto stub = v1::DatasetService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + who.token);
    v1::Dataset response;
    auto stream = stub->UploadDataset(&ctx, &response);
    v1::UploadDatasetRequest first;
    first.mutable_metadata()->set_display_name("big.jsonl");
    first.mutable_metadata()->set_size_bytes(1000);
    stream->Write(first);
    int sent = 0;
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(std::string(1000, ' '));
    while (sent < chunks && stream->Write(chunk)) ++sent;
    stream->WritesDone();
    return std::make_pair(stream->Finish(), sent);
  };
  const int before = count_blobs();
  constexpr int kChunks = 20000;  // 20 MB, if the server read it all
  auto [over_quota, sent_b] = upload_raw(bob_, kChunks);
  EXPECT_EQ(over_quota.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over_quota.error_message().find("tenant team-b's storage quota of 3000 bytes"),
            std::string::npos)
      << over_quota.error_message();
  EXPECT_LT(sent_b, kChunks) << "the server should stop the stream, not read it to the end";
  auto [over_limit, sent_a] = upload_raw(alice_, kChunks);
  EXPECT_LT(sent_a, kChunks);
  EXPECT_EQ(over_limit.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over_limit.error_message().find("the server's limit of 20000 bytes"),
            std::string::npos)
      << over_limit.error_message();
  EXPECT_EQ(count_blobs(), before);
  // The CLI's announced size is refused before any byte is sent.
  WriteFile(dir_ + "/big.json", LeaveDataset(200));
  RunResult big = As(bob_, {"datasets", "upload", dir_ + "/big.json"});
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_NE(big.err.find("storage quota"), std::string::npos) << big.err;
  EXPECT_EQ(count_blobs(), before);

  // One dataset, then no more; one queued job, then no more.
  WriteFile(dir_ + "/small.json", LeaveDataset(8));
  RunResult small = As(bob_, {"-o", "name", "datasets", "upload", dir_ + "/small.json"});
  ASSERT_EQ(small.exit_code, 0) << small.err;
  const std::string dataset = small.out.substr(0, small.out.find('\n'));
  RunResult second = As(bob_, {"datasets", "upload", dir_ + "/small.json"});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("holds 1 datasets, its quota is 1"), std::string::npos) << second.err;
  CreateJob(bob_, dataset);
  RunResult queued = As(bob_, {"jobs", "create", "--model", "tiny-gpt2", "--training-dataset",
                               dataset});
  EXPECT_EQ(queued.exit_code, 1);
  EXPECT_NE(queued.err.find("1 queued or paused jobs, its quota is 1"), std::string::npos)
      << queued.err;
  // Other tenants are not held by team-b's quota.
  EXPECT_EQ(As(alice_, {"datasets", "upload", dir_ + "/small.json"}).exit_code, 0);
}

TEST_F(SecurityTest, TokensFileIsReloadedOnChangeAndOnHangup) {
  StartServer(0);
  const NewToken carol = MakeToken("user", "carol", "team-c");
  EXPECT_EQ(As(carol, {"datasets", "list"}).exit_code, 4);
  WriteTokens(carol.line + "\n");
  bool admitted = false;
  for (int i = 0; i < 100 && !admitted; ++i) {
    admitted = As(carol, {"datasets", "list"}).exit_code == 0;
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(admitted) << "a changed tokens file is read within seconds";
  // A broken file keeps the one in force, and says why.
  WriteTokens(carol.line + "\nuser dave team-d the-token-itself\n");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(As(carol, {"datasets", "list"}).exit_code, 0);
  const std::string log = ReadAll(dir_ + "/server.out");
  EXPECT_NE(log.find("tokens file not reloaded"), std::string::npos) << log;
  EXPECT_NE(log.find("never the token itself"), std::string::npos) << log;
  // SIGHUP reads it at once: carol is gone.
  WriteTokens("");
  server_->Signal(SIGHUP);
  bool refused = false;
  for (int i = 0; i < 20 && !refused; ++i) {
    refused = As(carol, {"datasets", "list"}).exit_code == 4;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(As(alice_, {"datasets", "list"}).exit_code, 0);
}

// Certificates made here with openssl: a CA, the server's (for 127.0.0.1)
// and a worker's client certificate.
class TlsTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    const std::string d = dir_;
    const std::string script =
        "set -e; cd " + d + "; "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=tuneforge-test-ca "
        "  -keyout ca.key -out ca.pem 2>/dev/null; "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
        "  -keyout other.key -out other.pem 2>/dev/null; "
        "for who in server worker; do "
        "  openssl req -newkey rsa:2048 -nodes -subj /CN=$who -keyout $who.key -out $who.csr "
        "    2>/dev/null; done; "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -extfile server.ext -out server.pem 2>/dev/null; "
        "openssl x509 -req -in worker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -out worker.pem 2>/dev/null";
    WriteFile(d + "/certs.sh", script);
    ASSERT_EQ(std::system(("bash " + d + "/certs.sh").c_str()), 0);
    StartServer(0, {"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.key",
                    "--tls-client-ca=" + d + "/ca.pem", "--health-listen=127.0.0.1:0"});
  }
};

TEST_F(TlsTest, ClientsNeedTheCaAndWorkersACertificate) {
  const std::string ca = "--ca-file=" + dir_ + "/ca.pem";
  // Plaintext, or TLS trusting the wrong CA: no connection.
  EXPECT_EQ(As(alice_, {"datasets", "list"}).exit_code, 3);
  RunResult wrong = As(alice_, {"--ca-file=" + dir_ + "/other.pem", "datasets", "list"});
  EXPECT_EQ(wrong.exit_code, 3) << wrong.err;
  RunResult right = As(alice_, {ca, "datasets", "list"});
  EXPECT_EQ(right.exit_code, 0) << right.err;
  RunResult from_env = testing::Run("tuneforge", {"--addr=" + server_->addr(), "datasets", "list"},
                           {"TUNEFORGE_CA=" + dir_ + "/ca.pem", "TUNEFORGE_TOKEN=" + alice_.token});
  EXPECT_EQ(from_env.exit_code, 0) << from_env.err;

  // Probes that speak neither TLS nor tokens get the health service alone,
  // on a plaintext port of its own.
  std::smatch port;
  const std::string log = ReadAll(dir_ + "/server.out");
  ASSERT_TRUE(std::regex_search(log, port, std::regex("in plaintext, on 127.0.0.1:([0-9]+)")))
      << log;
  auto probe = grpc::CreateChannel("127.0.0.1:" + port[1].str(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(RawCall(probe, "/grpc.health.v1.Health/Check", "").error_code(),
            grpc::StatusCode::OK);
  EXPECT_EQ(RawCall(probe, "/tuneforge.v1.JobService/ListJobs", alice_.token).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  // The worker API over TLS: a worker token is not enough without a client
  // certificate the CA signed.
  auto channel_with = [&](bool certificate) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(dir_ + "/ca.pem");
    if (certificate) {
      ssl.pem_cert_chain = ReadAll(dir_ + "/worker.pem");
      ssl.pem_private_key = ReadAll(dir_ + "/worker.key");
    }
    return grpc::CreateChannel(server_->addr(), grpc::SslCredentials(ssl));
  };
  grpc::Status bare = RawCall(channel_with(false), "/tuneforge.v1.WorkerService/RegisterWorker",
                              pool_.token);
  EXPECT_EQ(bare.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bare.error_message();
  EXPECT_NE(bare.error_message().find("client certificate"), std::string::npos);
  grpc::Status with_certificate = RawCall(
      channel_with(true), "/tuneforge.v1.WorkerService/RegisterWorker", pool_.token);
  EXPECT_TRUE(with_certificate.ok()) << with_certificate.error_message();

  // A real worker with its certificate trains a job to the end.
  const std::string dataset = Upload(alice_, ca);
  RunResult created = As(alice_, {ca, "-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                                  "--training-dataset", dataset, "--epochs", "1",
                                  "--max-seq-len", "64"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string job = created.out.substr(0, created.out.find('\n'));
  BackgroundProcess worker("tuneforge-worker",
                           {"--server=" + server_->addr(), ca, "--cert-file=" + dir_ + "/worker.pem",
                            "--key-file=" + dir_ + "/worker.key", "--token=" + pool_.token,
                            "--threads=1", "--cache-dir=" + dir_ + "/cache", "--name=tls-worker"},
                           dir_ + "/worker");
  RunResult watched = As(alice_, {ca, "jobs", "watch", job});
  EXPECT_EQ(watched.exit_code, 0) << watched.out << watched.err << worker.Err();
  worker.Signal(SIGTERM);
  EXPECT_EQ(worker.Wait(30), 0);
}

TEST_F(SecurityTest, NonLoopbackAddressesNeedTlsAndTokensOrInsecure) {
  RunResult refused = testing::Run("tuneforge-server", {"--listen=0.0.0.0:0", "--data-dir=" + dir_ + "/d"});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE((refused.out + refused.err).find("--insecure"), std::string::npos) << refused.out;
  RunResult no_tokens = testing::Run("tuneforge-server",
                            {"--listen=0.0.0.0:0", "--data-dir=" + dir_ + "/d",
                             "--tls-cert=x.pem", "--tls-key=x.key"});
  EXPECT_EQ(no_tokens.exit_code, 2);
  EXPECT_NE((no_tokens.out + no_tokens.err).find("without authentication"), std::string::npos)
      << no_tokens.out;
  // A host name is no loopback address, whatever it starts with.
  RunResult named = testing::Run("tuneforge-server",
                                 {"--listen=127.evil.example:0", "--data-dir=" + dir_ + "/d"});
  EXPECT_EQ(named.exit_code, 2);
  EXPECT_NE((named.out + named.err).find("--insecure"), std::string::npos) << named.out;
  ServerProcess insecure(dir_, 0, {"--listen=0.0.0.0:0", "--insecure"});
  EXPECT_EQ(insecure.Cli({"datasets", "list"}).exit_code, 0);
}


// The bytes under the server's temp folder: uploads in progress.
int64_t TempBytes(const std::string& data_dir) {
  int64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(data_dir + "/tmp")) {
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  }
  return n;
}

// Sends `bytes` as one upload (or validation) stream of `who`, in chunks
// of 10,000 bytes; with `upload_id` set, a resumable one that is cut off
// (cancelled) once the server holds every byte, so it stays pending. The
// status the stream ended with.
grpc::Status StreamUpload(v1::DatasetService::Stub& stub, const NewToken& who,
                          const std::string& bytes, int64_t announced,
                          const std::string& upload_id = "", bool validate = false,
                          const std::function<bool()>& all_held = {}) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  ctx.AddMetadata("authorization", "Bearer " + who.token);
  v1::Dataset stored;
  v1::ValidateDatasetResponse report;
  auto stream = validate ? stub.ValidateDataset(&ctx, &report) : stub.UploadDataset(&ctx, &stored);
  v1::UploadDatasetRequest first;
  first.mutable_metadata()->set_display_name("part.jsonl");
  first.mutable_metadata()->set_size_bytes(announced);
  first.mutable_metadata()->set_upload_id(upload_id);
  bool open = stream->Write(first);
  for (size_t at = 0; open && at < bytes.size(); at += 10000) {
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(bytes.substr(at, 10000));
    open = stream->Write(chunk);
  }
  if (!upload_id.empty() && open) {
    for (int i = 0; i < 500 && all_held && !all_held(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ctx.TryCancel();
  } else {
    stream->WritesDone();
  }
  return stream->Finish();
}

// What one tenant leaves open counts against that tenant alone: its quota
// of uploads in progress, and byte for byte its storage quota, dry runs
// too. Another tenant uploads as before.
TEST_F(SecurityTest, UploadsInProgressCountAgainstTheirOwnTenantOnly) {
  WriteTokens("quota team-a stored_bytes=300000 uploads=4\n");
  StartServer(0);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::DatasetService::NewStub(channel);
  const std::string part(100000, ' ');
  for (const char* id : {"a", "b", "c"}) {
    const int64_t before = TempBytes(dir_ + "/data");
    StreamUpload(*stub, alice_, part, 200000, id, false,
                 [&] { return TempBytes(dir_ + "/data") == before + 100000; });
  }
  // What the server holds of a pending upload; -1 when none is pending.
  auto committed = [&](const NewToken& who, const std::string& id) -> int64_t {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + who.token);
    v1::QueryUploadRequest q;
    q.set_upload_id(id);
    v1::QueryUploadResponse r;
    return stub->QueryUpload(&ctx, q, &r).ok() ? r.committed_size() : -1;
  };
  int64_t held = 0;
  for (const char* id : {"a", "b", "c"}) held += committed(alice_, id);
  ASSERT_EQ(held, 300000) << "three pending uploads of 100,000 bytes";

  // Nothing is stored yet, but the quota's bytes are held: no more bytes,
  // neither for an upload nor a dry run.
  RunResult upload = As(alice_, {"datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(upload.exit_code, 1) << upload.out;
  EXPECT_NE(upload.err.find("team-a's storage quota of 300000 bytes"), std::string::npos)
      << upload.err;
  EXPECT_NE(upload.err.find("300000 bytes held by the tenant's uploads in progress"),
            std::string::npos)
      << upload.err;
  const std::string data = ReadAll(dir_ + "/data.json");
  grpc::Status validated = StreamUpload(*stub, alice_, data, data.size(), "", /*validate=*/true);
  EXPECT_EQ(validated.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << validated.error_message();

  // A fourth pending upload (no bytes) is the quota's last; a fifth waits.
  StreamUpload(*stub, alice_, "", 200000, "d", false, [&] { return committed(alice_, "d") == 0; });
  ASSERT_EQ(committed(alice_, "d"), 0);
  RunResult fifth = As(alice_, {"datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(fifth.exit_code, 1);
  EXPECT_NE(fifth.err.find("tenant team-a has 4 uploads in progress"), std::string::npos)
      << fifth.err;

  // Team-b sees none of it: 12 pending uploads of its own (of the default
  // 16) and a dataset.
  for (int i = 0; i < 12; ++i) {
    const std::string id = "b" + std::to_string(i);
    StreamUpload(*stub, bob_, "", 1000, id, false, [&] { return committed(bob_, id) == 0; });
    ASSERT_EQ(committed(bob_, id), 0) << id;
  }
  RunResult bobs = As(bob_, {"-o", "name", "datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(bobs.exit_code, 0) << bobs.err;
  EXPECT_TRUE(StreamUpload(*stub, bob_, data, data.size(), "", /*validate=*/true).ok());
}

// Removing a token from the tokens file ends what its holder has open:
// a WatchJob stream at once (with no event to send), an upload, a download
// and a worker's event stream at their next message, neither storing nor
// sending anything more.
TEST_F(SecurityTest, ARevokedTokenEndsItsOpenStreams) {
  const NewToken carol = MakeToken("user", "carol", "team-c");
  const NewToken pool2 = MakeToken("worker", "pool2", "-");
  WriteTokens(carol.line + "\n" + pool2.line + "\n");
  StartServer(0);  // no worker but this test: the job's watch stays quiet
  const std::string dataset = Upload(carol);
  const std::string job = CreateJob(carol, dataset);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());

  // A worker holds the job: it has uploaded a 32 MB artifact (more than
  // any flow-control window, so a download is still streaming when the
  // token goes) and keeps its event stream open.
  auto worker_api = v1::WorkerService::NewStub(channel);
  const v1::Assignment a = AcquireAsWorker(*worker_api, pool2.token);
  ASSERT_EQ(a.job().name(), job);
  const std::string big(32 << 20, 'x');
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + pool2.token);
    v1::UploadArtifactResponse resp;
    auto writer = worker_api->UploadArtifact(&ctx, &resp);
    v1::UploadArtifactRequest req;
    req.mutable_header()->set_job(job);
    req.mutable_header()->set_lease(a.lease());
    req.mutable_header()->set_artifact("metrics.csv");
    req.mutable_header()->set_size_bytes(static_cast<int64_t>(big.size()));
    writer->Write(req);
    for (size_t at = 0; at < big.size(); at += 1 << 20) {
      req.set_chunk(big.substr(at, 1 << 20));
      writer->Write(req);
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  grpc::ClientContext report_ctx;
  report_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  report_ctx.AddMetadata("authorization", "Bearer " + pool2.token);
  v1::ReportEventsResponse reported;
  auto report = worker_api->ReportEvents(&report_ctx, &reported);
  v1::ReportEventsRequest line;
  line.set_job(job);
  line.set_lease(a.lease());
  line.mutable_event()->mutable_log()->set_message("still here");
  ASSERT_TRUE(report->Write(line));
  auto jobs_api = v1::JobService::NewStub(channel);
  grpc::ClientContext download_ctx;
  download_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  download_ctx.AddMetadata("authorization", "Bearer " + carol.token);
  v1::DownloadArtifactRequest which;
  which.set_name(job);
  which.set_artifact("metrics.csv");
  auto download = jobs_api->DownloadArtifact(&download_ctx, which);
  v1::ArtifactChunk piece;
  ASSERT_TRUE(download->Read(&piece));
  int64_t downloaded = static_cast<int64_t>(piece.data().size());
  auto& jobs = jobs_api;
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  watch_ctx.AddMetadata("authorization", "Bearer " + carol.token);
  v1::WatchJobRequest request;
  request.set_name(job);
  auto watch = jobs->WatchJob(&watch_ctx, request);
  v1::JobEvent event;
  ASSERT_TRUE(watch->Read(&event));  // "created"

  auto datasets = v1::DatasetService::NewStub(channel);
  grpc::ClientContext upload_ctx;
  upload_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  upload_ctx.AddMetadata("authorization", "Bearer " + carol.token);
  v1::Dataset stored;
  auto upload = datasets->UploadDataset(&upload_ctx, &stored);
  const std::string bytes = ReadAll(dir_ + "/data.json");
  v1::UploadDatasetRequest first;
  first.mutable_metadata()->set_display_name("late.json");
  first.mutable_metadata()->set_size_bytes(static_cast<int64_t>(bytes.size()));
  ASSERT_TRUE(upload->Write(first));
  v1::UploadDatasetRequest chunk;
  chunk.set_chunk(bytes.substr(0, bytes.size() / 2));
  ASSERT_TRUE(upload->Write(chunk));

  WriteTokens("");  // carol's and pool2's lines are gone
  while (watch->Read(&event)) {
  }
  grpc::Status watched = watch->Finish();
  EXPECT_EQ(watched.error_code(), grpc::StatusCode::UNAUTHENTICATED) << watched.error_message();
  EXPECT_NE(watched.error_message().find("no longer accepted"), std::string::npos);
  while (download->Read(&piece)) downloaded += static_cast<int64_t>(piece.data().size());
  grpc::Status fetched = download->Finish();
  EXPECT_EQ(fetched.error_code(), grpc::StatusCode::UNAUTHENTICATED) << fetched.error_message();
  EXPECT_LT(downloaded, static_cast<int64_t>(big.size()));
  line.mutable_event()->mutable_log()->set_message("after revocation");
  report->Write(line);
  report->WritesDone();
  grpc::Status events = report->Finish();
  EXPECT_EQ(events.error_code(), grpc::StatusCode::UNAUTHENTICATED) << events.error_message();
  chunk.set_chunk(bytes.substr(bytes.size() / 2));
  upload->Write(chunk);
  upload->WritesDone();
  grpc::Status uploaded = upload->Finish();
  EXPECT_EQ(uploaded.error_code(), grpc::StatusCode::UNAUTHENTICATED) << uploaded.error_message();
  const std::string listed = As(ops_, {"-o", "name", "datasets", "list"}).out;
  EXPECT_EQ(listed, dataset + "\n") << "the cut-off upload stored nothing";
  EXPECT_EQ(As(ops_, {"jobs", "events", job}).out.find("after revocation"), std::string::npos);
}

// Priorities stay within -100..100 and, for users, within their tenant's
// band (by default up to 0); at equal priority tenants take turns, and a
// job's place in the queue counts its own tenant's jobs only.
TEST_F(SecurityTest, PrioritiesStayInTheirBandsAndTenantsTakeTurns) {
  WriteTokens("quota team-b priority=-100..50\n");
  StartServer(0);
  const std::string a_data = Upload(alice_);
  const std::string b_data = Upload(bob_);
  auto create = [&](const NewToken& who, const std::string& data, int priority) {
    return As(who, {"-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                    "--training-dataset", data, "--priority", std::to_string(priority)});
  };
  RunResult too_high = create(ops_, a_data, 101);
  EXPECT_EQ(too_high.exit_code, 2);
  EXPECT_NE(too_high.err.find("job.priority: 101 is outside -100..100"), std::string::npos)
      << too_high.err;
  RunResult above_band = create(alice_, a_data, 1);
  EXPECT_EQ(above_band.exit_code, 4);
  EXPECT_NE(above_band.err.find("tenant team-a may use priorities -100..0, not 1"),
            std::string::npos)
      << above_band.err;
  EXPECT_EQ(create(alice_, a_data, -2147483647 - 1).exit_code, 2);
  // Within the bands: a granted 50, an admin's 100, a user's own -5.
  for (const RunResult& r :
       {create(bob_, b_data, 50), create(ops_, a_data, 100), create(alice_, a_data, -5)}) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(As(ops_, {"jobs", "cancel", r.out.substr(0, r.out.find('\n'))}).exit_code, 0);
  }

  std::vector<std::string> a;
  for (int i = 0; i < 3; ++i) {
    RunResult r = create(alice_, a_data, 0);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    a.push_back(r.out.substr(0, r.out.find('\n')));
  }
  RunResult b = create(bob_, b_data, 0);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string b1 = b.out.substr(0, b.out.find('\n'));
  json bobs = json::parse(As(bob_, {"-o", "json", "jobs", "get", b1}).out);
  EXPECT_EQ(bobs["queuePosition"], 1) << bobs.dump();
  EXPECT_EQ(bobs["waitReason"].get<std::string>().find("team-a"), std::string::npos);
  EXPECT_NE(bobs["waitReason"].get<std::string>().find("position 1 among tenant team-b's"),
            std::string::npos)
      << bobs.dump();
  auto workers = v1::WorkerService::NewStub(
      grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(AcquireAsWorker(*workers, pool_.token).job().name(), a[0]);
  EXPECT_EQ(AcquireAsWorker(*workers, pool_.token).job().name(), b1) << "team-b's turn";
  EXPECT_EQ(AcquireAsWorker(*workers, pool_.token).job().name(), a[1]);
}

// With tokens, /metrics is an admin's and reflection (which cannot ask for
// a token) is off; --metrics-open serves a scraper that sends none.
TEST_F(SecurityTest, MetricsNeedAnAdminAndReflectionIsOffWithTokens) {
  const int port = FreeTcpPort();
  const std::string listen = "--metrics-listen=127.0.0.1:" + std::to_string(port);
  StartServer(0, {listen});
  httplib::Client http("127.0.0.1", port);
  auto scrape = [&](const std::string& token) {
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    httplib::Result r = http.Get("/metrics", headers);
    return r ? r->status : -1;
  };
  EXPECT_EQ(scrape(""), 401);
  EXPECT_EQ(scrape(alice_.token), 401);
  EXPECT_EQ(scrape(pool_.token), 401);
  EXPECT_EQ(scrape(ops_.token), 200);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(RawCall(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                    ops_.token)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  server_.reset();
  StartServer(0, {listen, "--metrics-open"});
  EXPECT_EQ(scrape(""), 200);
}


// Sets the field at `path` ("job.training_dataset") of `m` from text.
void SetField(google::protobuf::Message* m, const std::string& path, const std::string& value) {
  const size_t dot = path.find('.');
  const google::protobuf::FieldDescriptor* f =
      m->GetDescriptor()->FindFieldByName(path.substr(0, dot));
  ASSERT_NE(f, nullptr) << m->GetDescriptor()->full_name() << " has no field " << path;
  const google::protobuf::Reflection* r = m->GetReflection();
  if (dot != std::string::npos) {
    SetField(r->MutableMessage(m, f), path.substr(dot + 1), value);
    return;
  }
  using F = google::protobuf::FieldDescriptor;
  switch (f->cpp_type()) {
    case F::CPPTYPE_STRING: r->SetString(m, f, value); break;
    case F::CPPTYPE_INT64: r->SetInt64(m, f, std::stoll(value)); break;
    case F::CPPTYPE_INT32: r->SetInt32(m, f, std::stoi(value)); break;
    default: FAIL() << path << ": a type this helper does not set";
  }
}

// Every public RPC, enumerated from the service descriptors, with every
// kind of object its request can name: another tenant's object gets the
// code and the words a missing one does. A new RPC fails this test until
// it is listed below with the objects it names (or none).
TEST_F(SecurityTest, AnotherTenantsObjectIsAnsweredAsAMissingOneByEveryRpc) {
  StartServer(1);
  // Alice's objects: a dataset, an ended job and its model, a running job
  // and a pending upload.
  const std::string dataset = Upload(alice_);
  const std::string ended = CreateJob(alice_, dataset);
  ASSERT_EQ(As(alice_, {"jobs", "watch", ended}).exit_code, 0);
  const std::string model =
      json::parse(As(alice_, {"-o", "json", "jobs", "get", ended}).out)["resultModel"];
  const std::string running = CreateJob(alice_, dataset, 200);
  bool started = false;
  for (int i = 0; i < 400 && !started; ++i) {
    started = As(alice_, {"-o", "json", "jobs", "get", running}).out.find("JOB_STATE_RUNNING") !=
              std::string::npos;
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(started);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto datasets = v1::DatasetService::NewStub(channel);
  StreamUpload(*datasets, alice_, "", 1000, "alice-upload", false, [&] {
    return RawCall(channel, "/tuneforge.v1.DatasetService/QueryUpload", alice_.token,
                   [] {
                     v1::QueryUploadRequest q;
                     q.set_upload_id("alice-upload");
                     return q.SerializeAsString();
                   }())
        .ok();
  });
  const std::string bobs = Upload(bob_);

  // Each kind: Alice's object and a made-up one of the same shape.
  const std::map<std::string, std::pair<std::string, std::string>> kinds = {
      {"dataset", {dataset, "datasets/d000000000000"}},
      {"ended job", {ended, "jobs/j000000000000"}},
      {"running job", {running, "jobs/j000000000001"}},
      {"model", {model, "models/ft-j000000000000"}},
      {"upload", {"alice-upload", "nobody-upload"}}};
  struct Probe {
    std::string field;  // where the object is named
    std::string kind;
    std::map<std::string, std::string> fixed;  // the rest of a valid request
  };
  const std::map<std::string, std::string> upload = {{"metadata.display_name", "x.json"},
                                                     {"metadata.size_bytes", "100"}};
  const std::map<std::string, std::string> on_bobs = {{"job.training_dataset", bobs}};
  const std::vector<Probe> any_job = {{"name", "ended job", {}}, {"name", "running job", {}}};
  const std::map<std::string, std::vector<Probe>> probes = {
      {"DatasetService/UploadDataset",
       {{"metadata.model", "model", upload},
        {"metadata.upload_id", "upload",
         {{"metadata.display_name", "x.json"}, {"metadata.size_bytes", "1000"},
          {"metadata.offset", "10"}}}}},
      {"DatasetService/ValidateDataset", {{"metadata.model", "model", upload}}},
      {"DatasetService/QueryUpload", {{"upload_id", "upload", {}}}},
      {"DatasetService/GetDataset", {{"name", "dataset", {}}}},
      {"DatasetService/DeleteDataset", {{"name", "dataset", {}}}},
      {"DatasetService/ListDatasets", {}},  // names none: lists the caller's own
      {"ModelService/ListModels", {}},
      {"ModelService/GetModel", {{"name", "model", {}}}},
      {"ModelService/ImportModel", {}},  // names none: makes a new one
      {"ModelService/DeleteModel", {{"name", "model", {}}}},
      {"JobService/CreateJob",
       {{"job.training_dataset", "dataset", {{"job.base_model", "tiny-gpt2"}}},
        {"job.validation_dataset", "dataset", on_bobs},
        {"job.base_model", "model", on_bobs},
        {"job.base_model", "ended job", on_bobs},
        {"job.base_model", "running job", on_bobs}}},
      {"JobService/GetJob", any_job},
      {"JobService/ListJobs", {}},
      {"JobService/CancelJob", any_job},
      {"JobService/PauseJob", any_job},
      {"JobService/ResumeJob", any_job},
      {"JobService/WatchJob", any_job},
      {"JobService/ListJobEvents", any_job},
      {"JobService/ListCheckpoints", any_job},
      {"JobService/DownloadArtifact",
       {{"name", "ended job", {{"artifact", "metrics.csv"}}},
        {"name", "running job", {{"artifact", "metrics.csv"}}}}},
      {"JobService/ListWorkers", {}},  // names no job of another tenant (ATenantSeesNothing...)
  };

  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  int checked = 0;
  for (const auto& [method, is_public] : AllMethods()) {
    if (!is_public) continue;
    const std::string short_name = method.substr(method.find('.', 1) + 4);  // "JobService/GetJob"
    SCOPED_TRACE(short_name);
    auto listed = probes.find(short_name);
    if (listed == probes.end()) {
      ADD_FAILURE() << "a new RPC: list the objects its request names";
      continue;
    }
    const std::string service = method.substr(1, method.rfind('/') - 1);
    const google::protobuf::MethodDescriptor* descriptor =
        pool->FindServiceByName(service)->FindMethodByName(method.substr(method.rfind('/') + 1));
    const google::protobuf::Message* prototype =
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(
            descriptor->input_type());
    for (const Probe& probe : listed->second) {
      SCOPED_TRACE(probe.field + " = " + probe.kind);
      const auto& [real, fake] = kinds.at(probe.kind);
      auto request = [&](const std::string& value) {
        std::unique_ptr<google::protobuf::Message> m(prototype->New());
        for (const auto& [field, fixed] : probe.fixed) SetField(m.get(), field, fixed);
        SetField(m.get(), probe.field, value);
        return m->SerializeAsString();
      };
      const grpc::Status theirs = RawCall(channel, method, bob_.token, request(real));
      const grpc::Status missing = RawCall(channel, method, bob_.token, request(fake));
      EXPECT_FALSE(theirs.ok());
      EXPECT_EQ(theirs.error_code(), missing.error_code()) << theirs.error_message();
      std::string message = theirs.error_message();
      const std::string real_id = real.substr(real.find('/') + 1);
      const std::string fake_id = fake.substr(fake.find('/') + 1);
      for (size_t at; (at = message.find(real_id)) != std::string::npos;) {
        message.replace(at, real_id.size(), fake_id);
      }
      EXPECT_EQ(message, missing.error_message());
      ++checked;
    }
  }
  EXPECT_EQ(checked, 29);
  // The probes reached Alice's things and changed none of them.
  EXPECT_EQ(As(alice_, {"datasets", "get", dataset}).exit_code, 0);
  EXPECT_EQ(As(alice_, {"models", "get", model}).exit_code, 0);
  EXPECT_NE(As(alice_, {"-o", "json", "jobs", "get", running}).out.find("JOB_STATE_RUNNING"),
            std::string::npos);
  EXPECT_EQ(As(alice_, {"jobs", "cancel", running}).exit_code, 0);
}

}  // namespace
}  // namespace tuneforge::testing
