// The worker's agent: registers with the scheduler, long-polls for jobs, and
// runs each one through the training engine while it heartbeats, streams
// events, and stops when the job is cancelled or its lease is lost. Every
// checkpoint is uploaded to the scheduler, so a job resumes from it on any
// worker; an attempt starts by fetching the one it resumes from.
//
//   Agent agent(grpc::CreateChannel(addr, creds), options);
//   agent.Run();                 // until RequestStop() (e.g. from SIGTERM)
//
// Thread-safe: RequestStop() may be called from any thread; Run() from one.
#ifndef TUNEFORGE_WORKER_AGENT_H_
#define TUNEFORGE_WORKER_AGENT_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge {

struct AgentOptions {
  std::string name = "worker";     // shown in job events, e.g. "gpu-node-3/0"
  int threads = 0;                 // training threads; 0: the cores we may use
  // Blobs by sha256, model folders by model id, jobs' outputs while uploading.
  std::string cache_dir = "./tuneforge-worker-cache";
  int wait_ms = 10'000;            // long-poll length
  // How long a job keeps going while the scheduler is unreachable (a
  // restart, an upgrade): events wait in a bounded queue, uploads and the
  // final report are retried with backoff. Past it the attempt is given up
  // and its checkpoints stay on this host.
  int outage_seconds = 600;
  // Told whether the worker is registered with the scheduler (readiness).
  std::function<void(bool)> on_registered;
};

// The worker's own gauges, for its /metrics; updated as jobs train.
struct WorkerGauges {
  std::atomic<bool> busy{false};
  std::atomic<int64_t> steps{0};            // optimizer steps reported, all jobs
  std::atomic<int64_t> tokens{0};           // training tokens, all jobs
  std::atomic<double> tokens_per_second{0};  // of the running job, as last reported
  std::atomic<double> step_seconds{0};       // wall time per step between the last reports
  std::atomic<int64_t> jobs{0};             // jobs taken
};

class Agent {
 public:
  // `connect` makes a channel to the scheduler; it is called again when the
  // scheduler was unreachable for a while (a restart), so the agent talks to
  // the new process at once instead of after the old channel's backoff.
  using Connect = std::function<std::shared_ptr<grpc::Channel>()>;
  Agent(Connect connect, AgentOptions options);

  // Serves jobs until RequestStop(). Returns 0, or 1 on a fatal error.
  int Run();
  // Stops polling and the running job: it checkpoints, uploads the
  // checkpoint and hands the job back (ReleaseJob), so another worker
  // resumes it without losing steps. Run() then returns.
  void RequestStop();
  const WorkerGauges& gauges() const { return gauges_; }

 private:
  absl::Status Register();
  // Fetches a blob the assigned job may read into the cache (checked
  // against its digest); returns its path.
  absl::StatusOr<std::string> FetchBlob(const v1::Assignment& a, const std::string& sha256);
  absl::StatusOr<std::string> FetchBlobOnce(const v1::Assignment& a, const std::string& sha256);
  // What the engine opens for the assignment's base model: a preset's name,
  // or a folder in the cache built from the model's files (fetched by digest).
  absl::StatusOr<std::string> PrepareModel(const v1::Assignment& a);
  // Uploads every file of `dir` as the job's "{prefix}{file}" artifact.
  absl::Status UploadFolder(const v1::Assignment& a, const std::string& dir,
                            const std::string& prefix);
  // Uploads one file as the job's `artifact` (skipping the bytes when the
  // scheduler holds them already).
  absl::Status UploadFile(const v1::Assignment& a, const std::string& path,
                          const std::string& artifact);
  // Puts the checkpoint the assignment resumes from under `checkpoints`
  // (unless this host has it or a newer one) and its metrics in `metrics`.
  absl::Status FetchCheckpoint(const v1::Assignment& a, const std::string& checkpoints,
                               const std::string& metrics);
  void RunJob(const v1::Assignment& assignment);
  // Calls `call` again, with backoff, while it fails because the scheduler
  // is unreachable or restarting (and, with `out_of_space`, while its disk is
  // full), for at most outage_seconds. Its last status.
  // It stops early once `give_up` says so (the lease was lost).
  absl::Status Retrying(const std::string& what, const std::function<absl::Status()>& call,
                        const std::function<bool()>& give_up, bool out_of_space = false);

  // After a call found the scheduler unreachable: a new channel (at most a
  // few times a second), which connects at once when the scheduler is back;
  // gRPC's channels wait out a reconnection backoff of seconds first.
  void Reconnect();
  // The stub of the current channel; calls keep it alive while they run.
  std::shared_ptr<v1::WorkerService::Stub> Stub();

  const Connect connect_;
  std::mutex stub_mu_;
  std::shared_ptr<v1::WorkerService::Stub> stub_;                // guarded by stub_mu_
  std::chrono::steady_clock::time_point last_connect_;           // guarded by stub_mu_
  AgentOptions options_;
  std::string worker_;  // "workers/{id}"
  int heartbeat_interval_ms_ = 2000;
  std::atomic<bool> stop_{false};
  WorkerGauges gauges_;
  std::mutex poll_mu_;
  grpc::ClientContext* poll_ctx_ = nullptr;  // the pending AcquireJob, guarded by poll_mu_
};

}  // namespace tuneforge

#endif  // TUNEFORGE_WORKER_AGENT_H_
