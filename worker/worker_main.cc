// tuneforge-worker: pulls fine-tuning jobs from a scheduler and runs them.
//
//   tuneforge-worker --server=127.0.0.1:50051 --name=$(hostname)
#include <signal.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

#include <CLI/CLI.hpp>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/logging.h"
#include "common/metrics_http.h"
#include "common/signals.h"
#include "worker/agent.h"
#include "worker/engine/openmp_env.h"

namespace {

// Resident memory of this process, from /proc/self/statm.
double ResidentBytes() {
  long pages_total = 0, pages_resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return double(pages_resident) * double(sysconf(_SC_PAGESIZE));
}

std::string RenderWorkerMetrics(const tuneforge::WorkerGauges& g, const std::string& name) {
  using tuneforge::AppendHeader;
  using tuneforge::AppendSample;
  std::string out;
  const std::vector<std::pair<std::string, std::string>> worker = {{"worker", name}};
  AppendHeader(&out, "tuneforge_worker_busy", "gauge", "1 while training a job.");
  AppendSample(&out, "tuneforge_worker_busy", worker, g.busy ? 1 : 0);
  AppendHeader(&out, "tuneforge_worker_jobs_total", "counter", "Jobs this worker took.");
  AppendSample(&out, "tuneforge_worker_jobs_total", worker, double(g.jobs));
  AppendHeader(&out, "tuneforge_worker_steps_total", "counter", "Optimizer steps reported.");
  AppendSample(&out, "tuneforge_worker_steps_total", worker, double(g.steps));
  AppendHeader(&out, "tuneforge_worker_tokens_total", "counter", "Training tokens processed.");
  AppendSample(&out, "tuneforge_worker_tokens_total", worker, double(g.tokens));
  AppendHeader(&out, "tuneforge_worker_step_seconds", "gauge",
               "Wall time per optimizer step between the last two reports.");
  AppendSample(&out, "tuneforge_worker_step_seconds", worker, g.step_seconds);
  AppendHeader(&out, "tuneforge_worker_tokens_per_second", "gauge",
               "Training throughput of the running job; 0 when idle.");
  AppendSample(&out, "tuneforge_worker_tokens_per_second", worker, g.tokens_per_second);
  AppendHeader(&out, "tuneforge_worker_resident_memory_bytes", "gauge",
               "Resident memory of the worker process.");
  AppendSample(&out, "tuneforge_worker_resident_memory_bytes", worker, ResidentBytes());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  tuneforge::engine::UsePassiveOpenMpWait(argv);
  CLI::App app{"tuneforge-worker: runs fine-tuning jobs for a Tuneforge scheduler"};
  tuneforge::ChannelOptions channel;
  tuneforge::AgentOptions options;
  char host[256] = "worker";
  gethostname(host, sizeof(host) - 1);
  options.name = host;
  app.add_option("--server", channel.address, "scheduler address")->envname("TUNEFORGE_ADDR")
      ->capture_default_str();
  tuneforge::AddChannelOptions(app, &channel);
  app.add_option("--name", options.name, "shown in job events")->capture_default_str();
  app.add_option("--threads", options.threads, "training threads; 0: the cores we may use")
      ->capture_default_str();
  app.add_option("--cache-dir", options.cache_dir, "datasets cached by digest")
      ->capture_default_str();
  app.add_option("--wait-ms", options.wait_ms, "long-poll length")->capture_default_str();
  app.add_option("--scheduler-outage-seconds", options.outage_seconds,
                 "how long a job keeps training while the scheduler is unreachable (its "
                 "events queued, uploads retried); then the attempt is given up")
      ->capture_default_str();
  std::string health_listen;
  app.add_option("--health-listen", health_listen,
                 "serve grpc.health.v1 here in plaintext: \"\" is SERVING while registered with "
                 "the scheduler (readiness), \"liveness\" while the process runs");
  int stop_timeout_s = 300;
  app.add_option("--stop-timeout-seconds", stop_timeout_s,
                 "after SIGTERM, exit anyway this long later (the job then resumes from its "
                 "last uploaded checkpoint); keep it below the pod's grace period")
      ->capture_default_str();
  std::string log_format = "text";
  app.add_option("--log-format", log_format, "text, or json: one JSON object per line")
      ->capture_default_str();
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9091)");
  app.set_config("--config", "", "read these flags from a file (TOML: name = value)");
  CLI11_PARSE(app, argc, argv);

  tuneforge::CatchTerminationSignals();

  if (absl::Status s = tuneforge::SetLogFormat(
          log_format, "[%Y-%m-%d %H:%M:%S.%e] [worker " + options.name + "] [%l] %v",
          {{"component", "worker"}, {"worker", options.name}});
      !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  // Each channel has subchannels of its own: when the agent makes a new one
  // after the scheduler was unreachable, it connects at once instead of
  // sharing the old one's reconnection backoff.
  grpc::ChannelArguments channel_args;
  channel_args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> connection =
      tuneforge::MakeChannel(channel, channel_args);  // checks the options once
  if (!connection.ok()) {
    spdlog::error("{}", connection.status().ToString());
    return 2;
  }
  auto connect = [&channel, &channel_args, first = *connection]() mutable {
    if (first) return std::exchange(first, nullptr);
    return *tuneforge::MakeChannel(channel, channel_args);
  };
  std::unique_ptr<grpc::Server> health;
  if (!health_listen.empty()) {
    grpc::EnableDefaultHealthCheckService(true);
    // Reflection too (grpcurl); and a server needs one synchronous service.
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(health_listen, grpc::InsecureServerCredentials(), &port);
    health = builder.BuildAndStart();
    if (!health || port == 0) {
      spdlog::error("cannot serve health on {}", health_listen);
      return 2;
    }
    health->GetHealthCheckService()->SetServingStatus("liveness", true);
    health->GetHealthCheckService()->SetServingStatus("", false);
    options.on_registered = [service = health->GetHealthCheckService()](bool registered) {
      service->SetServingStatus("", registered);
    };
    spdlog::info("health on port {}", port);
  }
  tuneforge::Agent agent(connect, options);
  tuneforge::MetricsHttpServer metrics_http;
  if (!metrics_listen.empty()) {
    absl::StatusOr<int> port = metrics_http.Start(metrics_listen, [&agent, &options] {
      return RenderWorkerMetrics(agent.gauges(), options.name);
    });
    if (!port.ok()) {
      spdlog::error("{}", port.status().ToString());
      return 2;
    }
    spdlog::info("metrics on port {}", *port);
  }
  std::thread waiter([&] {
    const int sig = tuneforge::WaitForTerminationSignal();
    spdlog::info("received {}; stopping (at most {} s)", strsignal(sig), stop_timeout_s);
    agent.RequestStop();
    // A checkpoint upload that cannot finish (the scheduler unreachable)
    // must not outlive the pod's grace period and end in SIGKILL unlogged.
    std::this_thread::sleep_for(std::chrono::seconds(stop_timeout_s));
    spdlog::error("did not stop within {} s; exiting without handing the job back (it resumes "
                  "from its last uploaded checkpoint once its lease expires)", stop_timeout_s);
    std::_Exit(3);
  });
  waiter.detach();
  const int code = agent.Run();
  if (health) health->Shutdown();
  metrics_http.Stop();
  return code;
}
