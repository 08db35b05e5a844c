#include "tests/cluster.h"

#include <chrono>
#include <sstream>
#include <thread>

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

}  // namespace tuneforge::testing
