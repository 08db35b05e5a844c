// tuneforge-worker: pulls fine-tuning jobs from a scheduler and runs them.
//
//   tuneforge-worker --server=127.0.0.1:50051 --name=$(hostname)
#include <signal.h>

#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/signals.h"
#include "worker/agent.h"
#include "worker/engine/openmp_env.h"

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
  CLI11_PARSE(app, argc, argv);

  tuneforge::CatchTerminationSignals();

  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [worker " + options.name + "] [%l] %v");
  absl::StatusOr<std::shared_ptr<grpc::Channel>> connection = tuneforge::MakeChannel(channel);
  if (!connection.ok()) {
    spdlog::error("{}", connection.status().ToString());
    return 2;
  }
  tuneforge::Agent agent(*connection, options);
  std::thread waiter([&] {
    const int sig = tuneforge::WaitForTerminationSignal();
    spdlog::info("received {}; stopping", strsignal(sig));
    agent.RequestStop();
  });
  waiter.detach();
  return agent.Run();
}
