// Between a job's training run and the scheduler: the engine's settings from
// the assignment (ConfigFromJob), and JobObserver, which turns the engine's
// callbacks into the job's events (sent through the EventReporter), writes
// the metrics CSV, uploads each checkpoint before reporting it, keeps the
// worker's gauges, and answers the engine's ShouldStop() from what the
// heartbeat learned (cancelled, paused, lease lost, the scheduler's disk full).
//
// Thread-safe where marked: the flags are set by the heartbeat thread and read
// by the training thread; the callbacks come on the training thread.
#ifndef TUNEFORGE_WORKER_JOB_OBSERVER_H_
#define TUNEFORGE_WORKER_JOB_OBSERVER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tuneforge/v1/worker.pb.h"
#include "worker/agent.h"
#include "worker/engine/metrics_csv.h"
#include "worker/engine/trainer.h"
#include "worker/event_reporter.h"

namespace tuneforge {

// The engine's settings for the assigned job, on `threads` threads.
absl::StatusOr<engine::TrainConfig> ConfigFromJob(const v1::Job& job, int threads);

class JobObserver : public engine::TrainObserver {
 public:
  // Uploads a checkpoint folder (and the metrics so far) under `prefix`.
  using UploadCheckpoint =
      std::function<absl::Status(const std::string& dir, const std::string& prefix)>;

  JobObserver(EventReporter* reporter, const v1::Assignment& a, const std::atomic<bool>* stop,
              std::string metrics_path, UploadCheckpoint upload, WorkerGauges* gauges);

  void OnStart(const engine::TrainPlan& p) override;
  void OnMetrics(const engine::StepMetrics& m) override;
  void OnEvaluation(const engine::EvalMetrics& m) override;
  void OnSample(const std::string& prompt, const std::string& completion,
                int64_t step) override;
  // Uploads the checkpoint, then reports it (uploaded or not).
  void OnCheckpoint(int64_t step, int epoch, const std::string& dir, bool best) override;
  void Log(const std::string& level, const std::string& message);
  bool ShouldStop() override;
  // The scheduler cannot store what this attempt produces: it stops, and the
  // job is handed back saying so. Thread-safe.
  void OutOfSpace(const absl::Status& why);
  std::string out_of_space_reason() const;

  int64_t step() const { return step_; }
  engine::TrainPlan plan;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> paused{false};  // the scheduler asked: checkpoint and hand it back
  std::atomic<bool> lease_lost{false};
  std::atomic<bool> out_of_space{false};

 private:
  void Send(v1::JobEvent event);

  mutable std::mutex mu_;
  std::string out_of_space_reason_;  // guarded by mu_
  WorkerGauges* gauges_;
  std::chrono::steady_clock::time_point last_report_;
  int64_t last_report_step_ = 0;
  int64_t last_report_tokens_ = 0;
  EventReporter* reporter_;
  std::string job_;
  const std::atomic<bool>* agent_stop_;
  std::string metrics_path_;
  UploadCheckpoint upload_;
  engine::MetricsCsv metrics_;
  std::atomic<int64_t> step_{0};
};

}  // namespace tuneforge

#endif  // TUNEFORGE_WORKER_JOB_OBSERVER_H_
