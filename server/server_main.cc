// tuneforge-server: the scheduler. Serves the public API (datasets, models,
// jobs) and the worker API on one port, keeps state under --data-dir, and can
// start local worker processes.
//
//   tuneforge-server --listen=127.0.0.1:50051 --data-dir=./data --local-workers=1
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include "common/blob_store.h"
#include "common/signals.h"
#include "server/datasets.h"
#include "server/local_workers.h"
#include "server/scheduler.h"
#include "server/services.h"
#include "server/store.h"

namespace {

std::string DefaultWorkerBinary(const char* argv0) {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::canonical("/proc/self/exe", ec);
  if (ec) self = argv0;
  return (self.parent_path() / "tuneforge-worker").string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tuneforge-server: the Tuneforge scheduler"};
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "./tuneforge-data";
  int local_workers = 0;
  int64_t max_upload_bytes = int64_t{1} << 30;
  int64_t max_model_bytes = int64_t{64} << 30;
  double lease_seconds = 30;
  int heartbeat_ms = 2000;
  int max_attempts = 3;
  double stall_seconds = 1800;
  std::string worker_binary = DefaultWorkerBinary(argv[0]);
  int worker_threads = 0;
  std::string port_file;
  app.add_option("--listen", listen, "address to serve on; port 0 picks a free one")
      ->capture_default_str();
  app.add_option("--data-dir", data_dir, "database and blobs")->capture_default_str();
  app.add_option("--local-workers", local_workers, "worker processes to start here")
      ->capture_default_str();
  app.add_option("--max-upload-bytes", max_upload_bytes, "largest dataset upload")
      ->capture_default_str();
  app.add_option("--max-model-bytes", max_model_bytes,
                 "largest model import or trained model (all files together)")
      ->capture_default_str();
  app.add_option("--lease-seconds", lease_seconds,
                 "a running job goes back to the queue after this long without heartbeats")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", heartbeat_ms, "how often workers heartbeat")
      ->capture_default_str();
  app.add_option("--max-attempts", max_attempts,
                 "failed attempts (lease expired, stalled) before a job fails")
      ->capture_default_str();
  app.add_option("--stall-seconds", stall_seconds,
                 "a running job whose worker completes no step for this long is STALLED and "
                 "restarted from its checkpoint; 0: never")
      ->capture_default_str();
  app.add_option("--worker-binary", worker_binary, "for --local-workers")->capture_default_str();
  app.add_option("--worker-threads", worker_threads,
                 "training threads per local worker; 0: the cores divided among them")
      ->capture_default_str();
  app.add_option("--port-file", port_file, "write the port served on to this file");
  CLI11_PARSE(app, argc, argv);

  tuneforge::CatchTerminationSignals();  // taken by WaitForTerminationSignal() below

  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    spdlog::error("cannot create --data-dir {}: {}", data_dir, ec.message());
    return 1;
  }
  auto store = tuneforge::Store::Open(data_dir + "/tuneforge.db");
  if (!store.ok()) {
    spdlog::error("{}", store.status().ToString());
    return 1;
  }
  auto blobs = tuneforge::BlobStore::Open(data_dir);
  if (!blobs.ok()) {
    spdlog::error("{}", blobs.status().ToString());
    return 1;
  }
  tuneforge::SchedulerOptions options;
  options.lease_duration = absl::Seconds(lease_seconds);
  options.heartbeat_interval = absl::Milliseconds(heartbeat_ms);
  options.max_attempts = max_attempts;
  options.stall_timeout = absl::Seconds(stall_seconds);
  // Superseded checkpoints and those of ended jobs: their blobs go unless a
  // dataset, model or other job still holds the same bytes.
  options.release_blobs = [store = store->get(), blobs = blobs->get()](
                              const std::vector<std::string>& digests) {
    tuneforge::MutexLock lock(&store->blob_refs_mu());
    for (const std::string& sha : digests) {
      absl::StatusOr<int64_t> users = store->CountBlobReferences(sha);
      if (!users.ok() || *users > 0) continue;
      if (absl::Status s = blobs->Remove(sha); !s.ok()) spdlog::warn("{}", s.ToString());
    }
  };
  auto scheduler = tuneforge::Scheduler::Create(store->get(), options);
  if (!scheduler.ok()) {
    spdlog::error("{}", scheduler.status().ToString());
    return 1;
  }
  tuneforge::DatasetCatalog catalog(store->get(), blobs->get(), max_upload_bytes);
  tuneforge::ModelCatalog models(store->get(), blobs->get(), max_model_bytes);
  tuneforge::DatasetServiceImpl dataset_service(&catalog, &models);
  tuneforge::ModelServiceImpl model_service(&models);
  tuneforge::JobServiceImpl job_service(scheduler->get(), blobs->get());
  tuneforge::WorkerServiceImpl worker_service(scheduler->get(), store->get(), blobs->get(),
                                              &models, options, max_model_bytes);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.RegisterService(&dataset_service);
  builder.RegisterService(&model_service);
  builder.RegisterService(&job_service);
  builder.RegisterService(&worker_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::error("cannot serve on {}: address in use or invalid", listen);
    return 1;
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string address = host + ":" + std::to_string(port);
  spdlog::info("tuneforge-server listening on {} (data in {})", address, data_dir);
  if (!port_file.empty()) {
    std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::filesystem::rename(tmp, port_file, ec);
  }

  tuneforge::LocalWorkers workers;
  if (local_workers > 0) {
    const int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    const int threads = worker_threads > 0 ? worker_threads : std::max(1, cores / local_workers);
    absl::Status s = workers.Start(
        worker_binary,
        {"--server=" + address, "--threads=" + std::to_string(threads),
         "--cache-dir=" + data_dir + "/worker-cache"},
        local_workers);
    if (!s.ok()) {
      spdlog::error("{}", s.ToString());
      server->Shutdown();
      return 1;
    }
    spdlog::info("started {} local worker(s), {} training thread(s) each", local_workers,
                 threads);
  }

  const int sig = tuneforge::WaitForTerminationSignal();
  spdlog::info("received {}; shutting down", strsignal(sig));
  job_service.Shutdown();  // watchers learn why, and where to continue
  workers.Stop(absl::Seconds(10));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  spdlog::info("stopped");
  return 0;
}
