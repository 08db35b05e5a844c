// tuneforge-server: the scheduler. Serves the public API (datasets, models,
// jobs) and the worker API on one port, keeps state under --data-dir, and can
// start local worker processes.
//
//   tuneforge-server --listen=127.0.0.1:50051 --data-dir=./data --local-workers=1
//   tuneforge-server --listen=0.0.0.0:50051 --tls-cert=c.pem --tls-key=k.pem \
//       --tokens-file=/etc/tuneforge/tokens
//   tuneforge-server token --role=user --name=alice --tenant=team-a
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <thread>
#include <tuple>

#include <CLI/CLI.hpp>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include "common/blob_store.h"
#include "common/signals.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "server/auth.h"
#include "server/blob_reclaimer.h"
#include "server/data_dir_lock.h"
#include "server/datasets.h"
#include "common/logging.h"
#include "common/metrics_http.h"
#include "server/local_workers.h"
#include "server/metrics.h"
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

// Whether `listen` only reaches this host: a Unix socket, "localhost", or an
// IP literal in 127.0.0.0/8 or ::1, parsed as an address (a host name such as
// "127.evil.example" is not one).
bool IsLoopback(const std::string& listen) {
  if (listen.rfind("unix:", 0) == 0) return true;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host == "localhost") return true;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    in6_addr v6{};
    return inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6) == 1 &&
           IN6_IS_ADDR_LOOPBACK(&v6);
  }
  in_addr v4{};
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

// Server credentials: TLS when a certificate is given (asking clients for a
// certificate, verified against `client_ca`, when that is given), else none.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const std::string& cert, const std::string& key, const std::string& client_ca) {
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (cert.empty()) {
    if (!client_ca.empty()) return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert");
    return grpc::InsecureServerCredentials();
  }
  // Users connect without a certificate; workers must present one when
  // --tls-client-ca is set (checked per call, see AccessControl).
  grpc::SslServerCredentialsOptions options(
      client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                        : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.private_key, tuneforge::ReadFileOr(key, "--tls-key"));
  ASSIGN_OR_RETURN(pair.cert_chain, tuneforge::ReadFileOr(cert, "--tls-cert"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!client_ca.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs,
                     tuneforge::ReadFileOr(client_ca, "--tls-client-ca"));
  }
  return grpc::SslServerCredentials(options);
}

// `tuneforge-server token`: a new token and its tokens-file line.
int PrintToken(const std::string& role, const std::string& name, const std::string& tenant) {
  const std::string token = tuneforge::NewToken();
  const std::string line = absl::StrCat(role, " ", name, " ", role == "worker" ? "-" : tenant,
                                        " sha256:", tuneforge::TokenDigestHex(token));
  absl::StatusOr<tuneforge::AccessPolicy> check = tuneforge::ParseAccessPolicy(line, "token");
  if (!check.ok()) {
    std::fprintf(stderr, "%s\n", std::string(check.status().message()).c_str());
    return 2;
  }
  std::printf("%s\n%s\n", token.c_str(), line.c_str());
  std::fprintf(stderr,
               "line 1 is the token: hand it to %s once, it is stored nowhere.\n"
               "line 2 goes into the tokens file; the server reads it within seconds.\n",
               name.c_str());
  return 0;
}

// Takes the reflection plugin, which registers itself whenever its library
// is linked, off a server.
class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                    return p->name().find("reflection") != std::string::npos;
                                  }),
                   plugins->end());
  }
};

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
  std::string tokens_file, audit_log = "<data-dir>/audit.log";
  std::string tls_cert, tls_key, tls_client_ca, health_listen, metrics_listen;
  bool insecure = false;
  std::string quota_bytes = "0";
  tuneforge::Quota quota;
  app.add_option("--listen", listen, "address to serve on; port 0 picks a free one")
      ->capture_default_str();
  app.add_option("--tokens-file", tokens_file,
                 "bearer tokens (digests), roles, tenants and quotas; re-read when it changes "
                 "and on SIGHUP. Unset: no authentication (loopback only)");
  app.add_option("--audit-log", audit_log, "one JSON line per mutating call; '' for none")
      ->capture_default_str();
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve TLS");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", tls_client_ca,
                 "PEM CA: workers must present a client certificate it signed (mutual TLS)");
  app.add_option("--health-listen", health_listen,
                 "also serve only grpc.health.v1 here, in plaintext (Kubernetes probes)");
  app.add_option("--metrics-listen", metrics_listen,
                 "serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9090); with "
                 "--tokens-file a scrape needs an admin's token (Authorization: Bearer)");
  bool metrics_open = false;
  app.add_flag("--metrics-open", metrics_open,
               "serve /metrics without a token even with --tokens-file (keep the port inside "
               "the cluster's network)");
  std::string log_format = "text";
  app.add_option("--log-format", log_format, "text, or json: one JSON object per line")
      ->capture_default_str();
  app.add_flag("--insecure", insecure,
               "serve a non-loopback address without TLS or without --tokens-file");
  app.add_option("--quota-stored-bytes", quota_bytes,
                 "per tenant: bytes of datasets and models (e.g. 50GiB); 0: no limit")
      ->capture_default_str();
  app.add_option("--quota-datasets", quota.datasets, "per tenant: datasets; 0: no limit")
      ->capture_default_str();
  app.add_option("--quota-queued-jobs", quota.queued_jobs,
                 "per tenant: queued and paused jobs; 0: no limit")
      ->capture_default_str();
  app.add_option("--quota-running-jobs", quota.running_jobs,
                 "per tenant: jobs running at once; 0: no limit")
      ->capture_default_str();
  quota.uploads = 16;
  app.add_option("--quota-uploads", quota.uploads,
                 "per tenant: open upload, validation and import streams plus resumable "
                 "uploads awaiting a resume; 0: no limit")
      ->capture_default_str();
  std::string priority_band = "-100..0";
  app.add_option("--priority-band", priority_band,
                 "the job priorities a tenant's users may set (admins: -100..100); a tokens-file "
                 "quota line's priority=MIN..MAX overrides it")
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
  app.set_config("--config", "", "read these flags from a file (TOML: name = value)");
  std::string token_role = "user", token_name, token_tenant = tuneforge::kDefaultTenant;
  CLI::App* token = app.add_subcommand("token", "print a new token and its tokens-file line");
  token->add_option("--role", token_role, "user | admin | worker")->capture_default_str();
  token->add_option("--name", token_name, "who holds it (shown in the audit log)")->required();
  token->add_option("--tenant", token_tenant, "whose resources it reaches")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (token->parsed()) return PrintToken(token_role, token_name, token_tenant);

  tuneforge::CatchTerminationSignals(/*hangup=*/true);  // taken by WaitForTerminationSignal()
  if (absl::Status s = tuneforge::SetLogFormat(log_format, "", {{"component", "scheduler"}});
      !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }

  absl::StatusOr<int64_t> stored_bytes = tuneforge::ParseByteSize(quota_bytes);
  if (!stored_bytes.ok()) {
    spdlog::error("--quota-stored-bytes: {}", std::string(stored_bytes.status().message()));
    return 2;
  }
  quota.stored_bytes = *stored_bytes;
  absl::StatusOr<tuneforge::PriorityBand> band = tuneforge::ParsePriorityBand(priority_band);
  if (!band.ok()) {
    spdlog::error("--priority-band: {}", std::string(band.status().message()));
    return 2;
  }
  quota.priority = *band;
  // Anything beyond this host needs TLS and tokens, or an explicit --insecure.
  if (!IsLoopback(listen) && !insecure && (tls_cert.empty() || tokens_file.empty())) {
    spdlog::error("refusing to serve {} {}: only loopback addresses are served without TLS "
                  "(--tls-cert, --tls-key) and tokens (--tokens-file); pass --insecure to "
                  "serve it anyway", listen,
                  tls_cert.empty() ? "in plaintext" : "without authentication");
    return 2;
  }
  auto credentials = Credentials(tls_cert, tls_key, tls_client_ca);
  if (!credentials.ok()) {
    spdlog::error("{}", credentials.status().ToString());
    return 2;
  }
  auto access = tuneforge::AccessControl::Create(
      {tokens_file, quota, /*workers_need_client_certificate=*/!tls_client_ca.empty()});
  if (!access.ok()) {
    spdlog::error("{}", access.status().ToString());
    return 1;
  }

  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    spdlog::error("cannot create --data-dir {}: {}", data_dir, ec.message());
    return 1;
  }
  auto data_dir_lock = tuneforge::DataDirLock::Acquire(data_dir);
  if (!data_dir_lock.ok()) {
    spdlog::error("{}", std::string(data_dir_lock.status().message()));
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
  if (audit_log == "<data-dir>/audit.log") audit_log = data_dir + "/audit.log";
  auto audit = tuneforge::AuditLog::Open(audit_log);
  if (!audit.ok()) {
    spdlog::error("{}", audit.status().ToString());
    return 1;
  }
  auto pages = tuneforge::PageTokens::LoadOrCreate(data_dir + "/page_token.key");
  if (!pages.ok()) {
    spdlog::error("{}", pages.status().ToString());
    return 1;
  }
  const tuneforge::Guards guards{access->get(), audit->get(), &*pages};
  tuneforge::SchedulerOptions options;
  options.quota = (*access)->quota_fn();
  options.lease_duration = absl::Seconds(lease_seconds);
  options.heartbeat_interval = absl::Milliseconds(heartbeat_ms);
  options.max_attempts = max_attempts;
  options.stall_timeout = absl::Seconds(stall_seconds);
  // Superseded checkpoints and those of ended jobs: their blobs go unless a
  // dataset, model or other job still holds the same bytes. The reclaimer
  // removes them on its own thread, so no caller's lock is ever re-entered.
  // What a crash left unreferenced (queued removals, a blob published just
  // before its record failed) goes at start.
  tuneforge::BlobReclaimer reclaimer(store->get(), blobs->get());
  reclaimer.Release((*blobs)->List());
  options.release_blobs = [&reclaimer](const std::vector<std::string>& digests) {
    reclaimer.Release(digests);
  };
  auto scheduler = tuneforge::Scheduler::Create(store->get(), options);
  if (!scheduler.ok()) {
    spdlog::error("{}", scheduler.status().ToString());
    return 1;
  }
  // Uploads in progress count against each tenant's quotas across both.
  auto ledger = std::make_shared<tuneforge::UploadLedger>(options.quota);
  tuneforge::DatasetCatalog catalog(store->get(), blobs->get(), max_upload_bytes, options.quota,
                                    ledger);
  tuneforge::ModelCatalog models(store->get(), blobs->get(), max_model_bytes, options.quota,
                                 ledger);
  tuneforge::DatasetServiceImpl dataset_service(guards, &catalog, &models);
  tuneforge::ModelServiceImpl model_service(guards, &models);
  tuneforge::JobServiceImpl job_service(guards, scheduler->get(), blobs->get());
  tuneforge::WorkerServiceImpl worker_service(guards, scheduler->get(), store->get(),
                                              blobs->get(), &models, options, max_model_bytes);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  tuneforge::RpcMetrics rpc_metrics;
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(rpc_metrics.InterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  // Reflection answers without asking for a token: only servers that ask
  // for none serve it. With tokens, clients use the files in proto/.
  if ((*access)->enabled()) builder.SetOption(std::make_unique<WithoutReflection>());
  int port = 0;
  builder.AddListeningPort(listen, *credentials, &port);
  // Local workers reach the server through a Unix socket in the data
  // directory (its permissions are the data's): no TLS to set up for them.
  const std::string worker_socket =
      (std::filesystem::absolute(data_dir) / "workers.sock").lexically_normal().string();
  if (local_workers > 0) {
    if (worker_socket.size() > 100) {
      spdlog::error("--data-dir {} is too long a path for the local workers' socket", data_dir);
      return 2;
    }
    std::filesystem::remove(worker_socket, ec);
    builder.AddListeningPort("unix:" + worker_socket, grpc::InsecureServerCredentials());
  }
  // Every message is at most 8 MiB: uploads and downloads stream in chunks.
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
  // Kubernetes' gRPC probes speak neither TLS nor tokens: a port of its own
  // with the health service alone.
  std::unique_ptr<grpc::Server> health_server;
  // Both answer without TLS (metrics: and without a token, unless tokens
  // are on): say so when they reach beyond this host.
  for (const auto& [flag, address, what] :
       {std::tuple<const char*, std::string, const char*>{
            "--health-listen", health_listen, "whether the server is serving"},
        {"--metrics-listen", (*access)->enabled() && !metrics_open ? "" : metrics_listen,
         "job counts by state, queue depth, and each busy worker's tokens/s (no job or tenant "
         "names)"}}) {
    if (!address.empty() && !IsLoopback(address)) {
      spdlog::warn("{}={} answers anyone who reaches it, without TLS or a token: {}; keep it "
                   "inside the cluster's network", flag, address, what);
    }
  }
  if (!health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    int health_port = 0;
    health_builder.AddListeningPort(health_listen, grpc::InsecureServerCredentials(),
                                    &health_port);
    health_server = health_builder.BuildAndStart();
    if (!health_server || health_port == 0) {
      spdlog::error("cannot serve health on {}", health_listen);
      return 1;
    }
    spdlog::info("health service alone, in plaintext, on {}:{}",
                 health_listen.substr(0, health_listen.rfind(':')), health_port);
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string address = host + ":" + std::to_string(port);
  tuneforge::MetricsHttpServer metrics_http;
  if (!metrics_listen.empty()) {
    // With tokens, what every tenant's jobs and workers do is an admin's to see.
    std::function<bool(const std::string&)> authorize;
    if ((*access)->enabled() && !metrics_open) {
      authorize = [&access](const std::string& header) {
        absl::StatusOr<tuneforge::Caller> caller = (*access)->CallerOf(header);
        return caller.ok() && caller->role == tuneforge::Role::kAdmin;
      };
    }
    absl::StatusOr<int> metrics_port = metrics_http.Start(
        metrics_listen,
        [&] {
          return tuneforge::RenderServerMetrics((*scheduler)->Stats(), (*blobs)->TotalBytes(),
                                                rpc_metrics);
        },
        std::move(authorize));
    if (!metrics_port.ok()) {
      spdlog::error("{}", metrics_port.status().ToString());
      return 1;
    }
    spdlog::info("metrics on http://{}:{}/metrics",
                 metrics_listen.substr(0, metrics_listen.rfind(':')), *metrics_port);
  }
  spdlog::info("tuneforge-server listening on {} ({}, {}; data in {})", address,
               tls_cert.empty() ? "plaintext" : tls_client_ca.empty() ? "TLS" : "TLS, workers mTLS",
               tokens_file.empty() ? "no authentication" : "tokens from " + tokens_file, data_dir);
  if (!port_file.empty()) {
    std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::filesystem::rename(tmp, port_file, ec);
  }

  tuneforge::LocalWorkers workers;
  if (local_workers > 0) {
    const int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    const int threads = worker_threads > 0 ? worker_threads : std::max(1, cores / local_workers);
    std::vector<std::string> env;
    if ((*access)->enabled()) {
      env.push_back("TUNEFORGE_TOKEN=" + (*access)->AddEphemeralWorkerToken("local-workers"));
    }
    absl::Status s = workers.Start(
        worker_binary,
        {"--server=unix:" + worker_socket, "--threads=" + std::to_string(threads),
         "--cache-dir=" + data_dir + "/worker-cache", "--log-format=" + log_format},
        local_workers, env);
    if (!s.ok()) {
      spdlog::error("{}", s.ToString());
      server->Shutdown();
      return 1;
    }
    spdlog::info("started {} local worker(s), {} training thread(s) each", local_workers,
                 threads);
  }

  // The tokens file is re-read when its bytes change (a Kubernetes Secret
  // is swapped, not edited) and on SIGHUP; a broken edit keeps the old one.
  auto reload = [&access, &job_service](bool forced) {
    absl::StatusOr<bool> changed = true;
    if (!forced) {
      changed = (*access)->ReloadIfChanged();
    } else if (absl::Status s = (*access)->Reload(); !s.ok()) {
      changed = s;
    }
    if (!changed.ok()) {
      spdlog::error("tokens file not reloaded, the previous one stays in force: {}",
                    std::string(changed.status().message()));
    } else if (*changed) {
      spdlog::info("tokens file reloaded");
      job_service.RecheckWatchers();  // a revoked token's streams end now
    }
  };
  std::atomic<bool> stopping{false};
  std::thread watcher;
  if ((*access)->enabled()) {
    watcher = std::thread([&] {
      while (!stopping.load()) {
        for (int i = 0; i < 20 && !stopping.load(); ++i) absl::SleepFor(absl::Milliseconds(100));
        if (!stopping.load()) reload(false);
      }
    });
  }
  const int sig = tuneforge::WaitForTerminationSignal([&] {
    if ((*access)->enabled()) reload(true);
  });
  spdlog::info("received {}; shutting down", strsignal(sig));
  stopping = true;
  if (watcher.joinable()) watcher.join();
  job_service.Shutdown();  // watchers learn why, and where to continue
  workers.Stop(absl::Seconds(10));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (health_server) health_server->Shutdown();
  metrics_http.Stop();
  spdlog::info("stopped");
  return 0;
}
