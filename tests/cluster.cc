#include "tests/cluster.h"

#include <chrono>
#include <filesystem>
#include <future>
#include <sstream>
#include <thread>

#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>

#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/model.grpc.pb.h"

namespace tuneforge::testing {

std::vector<json> ParseEvents(const std::string& text) {
  std::vector<json> events;
  std::istringstream in(text);
  while (in >> std::ws && in.peek() == '{') {
    json event;
    in >> event;
    events.push_back(std::move(event));
  }
  return events;
}

json ParseJson(const RunResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return json::parse(r.out);
}

int64_t Int(const json& j, const char* key) {
  if (!j.contains(key)) return 0;
  return j[key].is_string() ? std::stoll(j[key].get<std::string>()) : j[key].get<int64_t>();
}

std::vector<std::map<int64_t, double>> LossesByAttempt(const std::vector<json>& events) {
  std::vector<std::map<int64_t, double>> out;
  for (const json& e : events) {
    if (e.contains("started")) out.emplace_back();
    if (e.contains("metrics") && !out.empty()) {
      out.back()[Int(e["metrics"], "step")] = e["metrics"]["loss"].get<double>();
    }
  }
  return out;
}

std::vector<int64_t> ResumedFrom(const std::vector<json>& events) {
  std::vector<int64_t> out;
  for (const json& e : events) {
    if (e.contains("started")) out.push_back(Int(e["started"], "resumedFromStep"));
  }
  return out;
}

v1::Assignment AcquireAsWorker(v1::WorkerService::Stub& stub, const std::string& token) {
  auto context = [&](grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  };
  v1::RegisterWorkerResponse registered;
  {
    grpc::ClientContext ctx;
    context(ctx);
    v1::RegisterWorkerRequest req;
    req.set_display_name("test-worker");
    req.set_device("cpu");
    grpc::Status s = stub.RegisterWorker(&ctx, req, &registered);
    if (!s.ok()) ADD_FAILURE() << "RegisterWorker: " << s.error_message();
  }
  grpc::ClientContext ctx;
  context(ctx);
  v1::AcquireJobRequest req;
  req.set_worker(registered.worker());
  req.set_wait_ms(5000);
  v1::AcquireJobResponse acquired;
  grpc::Status s = stub.AcquireJob(&ctx, req, &acquired);
  if (!s.ok() || !acquired.has_assignment()) {
    ADD_FAILURE() << "AcquireJob: " << s.error_message() << " (no job was handed out)";
  }
  return acquired.assignment();
}

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

grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& token, const std::string& request) {
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

grpc::Status StreamUpload(v1::DatasetService::Stub& stub, const NewToken& who,
                          const std::string& bytes, int64_t announced,
                          const std::string& upload_id, bool validate,
                          const std::function<bool()>& all_held) {
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

void ClusterTest::SetUp() {
  dir_ = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  WriteFile(dir_ + "/data.json", LeaveDataset(40));
}

void ClusterTest::StartServer(const std::vector<std::string>& args, int local_workers) {
  server_.reset();  // a running one stops first (SIGTERM)
  server_ = std::make_unique<ServerProcess>(dir_, local_workers, args);
}

std::unique_ptr<BackgroundProcess> ClusterTest::StartWorker(const std::string& host,
                                                            const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--server=" + server_->addr(),
                                   "--cache-dir=" + dir_ + "/" + host, "--threads=1",
                                   "--name=" + host, "--wait-ms=500"};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<BackgroundProcess>("tuneforge-worker", args, dir_ + "/" + host);
}

std::string ClusterTest::UploadDataset(const std::string& path) {
  RunResult up = server_->Cli(
      {"-o", "name", "datasets", "upload", path.empty() ? dir_ + "/data.json" : path});
  EXPECT_EQ(up.exit_code, 0) << up.err;
  return up.out.substr(0, up.out.find('\n'));
}

std::string ClusterTest::CreateJob(int epochs, const std::vector<std::string>& extra) {
  if (dataset_.empty()) dataset_ = UploadDataset();
  std::vector<std::string> args = {"-o", "name", "jobs", "create", "--training-dataset",
                                   dataset_, "--epochs", std::to_string(epochs),
                                   "--batch-size", "2", "--learning-rate", "3e-3",
                                   "--max-seq-len", "64", "--log-every", "1",
                                   "--checkpoint-every", "20", "--samples", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  RunResult r = server_->Cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return r.out.substr(0, r.out.find('\n'));
}

json ClusterTest::GetJob(const std::string& job) {
  RunResult r = server_->Cli({"-o", "json", "jobs", "get", job});
  return r.exit_code == 0 ? json::parse(r.out) : json::object();
}

json ClusterTest::WaitForJob(const std::string& job, const std::function<bool(const json&)>& pred,
                             int timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  json j;
  while (std::chrono::steady_clock::now() < deadline) {
    j = GetJob(job);
    if (!j.empty() && pred(j)) return j;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  ADD_FAILURE() << "timed out waiting on " << job << ": " << j.dump() << "\n" << server_->Log();
  return j;
}

std::vector<json> ClusterTest::WatchToEnd(const std::string& job) {
  RunResult r = testing::Run(
      "tuneforge", {"--addr=" + server_->addr(), "-o", "json", "jobs", "watch", job}, {}, 180);
  std::vector<json> events = ParseEvents(r.out);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(Int(events[i], "sequence"), static_cast<int64_t>(i + 1)) << "gap or duplicate";
  }
  return events;
}

void EndToEndTest::SetUp() {
  ClusterTest::SetUp();
  StartServer({}, /*local_workers=*/1);
}

std::string EndToEndTest::CreateJob(const std::string& dataset, int epochs) {
  RunResult r = server_->Cli({"-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                              "--training-dataset", dataset, "--epochs",
                              std::to_string(epochs), "--learning-rate", "3e-3",
                              "--max-seq-len", "64", "--log-every", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return r.out.substr(0, r.out.find('\n'));
}

void SecurityTest::SetUp() {
  ClusterTest::SetUp();
  alice_ = MakeToken("user", "alice", "team-a");
  bob_ = MakeToken("user", "bob", "team-b");
  ops_ = MakeToken("admin", "ops", "ops");
  pool_ = MakeToken("worker", "pool", "-");
  WriteTokens("");
  // Fewer examples than ClusterTest's 40: these jobs only have to run, and soon.
  WriteFile(dir_ + "/data.json", LeaveDataset(16));
}

void SecurityTest::WriteTokens(const std::string& extra) {
  // Written aside and renamed, as a Kubernetes Secret is updated.
  WriteFile(dir_ + "/tokens.tmp", "# role name tenant digest\n" + alice_.line + "\n" +
                                      bob_.line + "\n" + ops_.line + "\n" + pool_.line + "\n" +
                                      extra);
  std::filesystem::rename(dir_ + "/tokens.tmp", dir_ + "/tokens");
}

void SecurityTest::StartServer(int workers, std::vector<std::string> extra) {
  extra.push_back("--tokens-file=" + dir_ + "/tokens");
  ClusterTest::StartServer(extra, workers);
}

RunResult SecurityTest::As(const NewToken& who, std::vector<std::string> args) const {
  args.insert(args.begin(), "--token=" + who.token);
  return server_->Cli(args);
}

std::string SecurityTest::Upload(const NewToken& who, const std::string& tls_flag) {
  RunResult r = As(who, {tls_flag, "-o", "name", "datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return r.out.substr(0, r.out.find('\n'));
}

std::string SecurityTest::CreateJob(const NewToken& who, const std::string& dataset, int epochs) {
  RunResult r = As(who, {"-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                         "--training-dataset", dataset, "--epochs", std::to_string(epochs),
                         "--max-seq-len", "64", "--batch-size", "8"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return r.out.substr(0, r.out.find('\n'));
}

std::vector<json> SecurityTest::AuditLines() const {
  std::vector<json> lines;
  std::istringstream in(ReadAll(dir_ + "/data/audit.log"));
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  return lines;
}

}  // namespace tuneforge::testing
