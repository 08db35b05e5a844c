// End to end, what an operator watches: the standard gRPC health and
// reflection services of a real scheduler, the Prometheus /metrics of the
// server and of a worker (checked by promtool, counting what happened), and
// JSON logs that are one object a line.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/cluster.h"

namespace tuneforge::testing {
namespace {

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
  const int rc =
      std::system(("promtool check metrics < " + file + " > " + file + ".check 2>&1").c_str());
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

// The port a process printed after `marker` in its log, waited for up to 10 s; 0 if never.
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

}  // namespace
}  // namespace tuneforge::testing
