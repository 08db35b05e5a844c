#include "worker/agent.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <fstream>
#include <thread>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/blob_store.h"
#include "common/dataset.h"
#include "common/dataset_validator.h"
#include "common/report_proto.h"
#include "common/settings_proto.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "worker/event_reporter.h"
#include "worker/grpc_call.h"
#include "worker/job_observer.h"
#include "worker/tensorboard.h"
#include "worker/engine/metrics_csv.h"
#include "worker/engine/trainer.h"

namespace tuneforge {
Agent::Agent(Connect connect, AgentOptions options)
    : connect_(std::move(connect)),
      stub_(v1::WorkerService::NewStub(connect_())),
      last_connect_(std::chrono::steady_clock::now()),
      options_(std::move(options)) {}

std::shared_ptr<v1::WorkerService::Stub> Agent::Stub() {
  std::lock_guard<std::mutex> lock(stub_mu_);
  return stub_;
}

void Agent::Reconnect() {
  std::lock_guard<std::mutex> lock(stub_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_connect_ < std::chrono::milliseconds(250)) return;
  stub_ = v1::WorkerService::NewStub(connect_());
  last_connect_ = now;
}

void Agent::RequestStop() {
  stop_ = true;
  std::lock_guard<std::mutex> lock(poll_mu_);
  if (poll_ctx_ != nullptr) poll_ctx_->TryCancel();
}

absl::Status Agent::Register() {
  grpc::ClientContext ctx;
  SetDeadline(ctx, kCallTimeout);
  v1::RegisterWorkerRequest req;
  req.set_display_name(options_.name);
  req.set_device(engine::DefaultDevice());
  // What jobs must fit in: the host's memory on a CPU worker. A GPU's own
  // memory is not read here (that needs CUDA's API): 0 says "not known", and
  // the scheduler then sends any job.
  req.set_memory_bytes(req.device() == "cpu" ? static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) *
                                                   sysconf(_SC_PAGESIZE)
                                             : 0);
  req.set_engine_version(std::string("tuneforge-") + engine::kEngineVersion);
  v1::RegisterWorkerResponse resp;
  grpc::Status s = Stub()->RegisterWorker(&ctx, req, &resp);
  if (!s.ok()) return FromGrpc(s);
  worker_ = resp.worker();
  heartbeat_interval_ms_ = std::max(100, resp.heartbeat_interval_ms());
  spdlog::info("registered as {} ({})", worker_, options_.name);
  return absl::OkStatus();
}

int Agent::Run() {
  std::error_code ec;
  std::filesystem::create_directories(options_.cache_dir, ec);
  if (ec) {
    spdlog::error("cannot create cache dir {}: {}", options_.cache_dir, ec.message());
    return 1;
  }
  int backoff_ms = 200;
  while (!stop_) {
    if (worker_.empty()) {
      absl::Status s = Register();
      if (options_.on_registered) options_.on_registered(s.ok());
      if (!s.ok()) {
        spdlog::warn("cannot register with the scheduler ({}); retrying in {} ms", s.ToString(),
                     backoff_ms);
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
        Reconnect();
        backoff_ms = std::min(backoff_ms * 2, 2000);
        continue;
      }
      backoff_ms = 200;
    }
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::milliseconds(options_.wait_ms + 10'000));
    {
      std::lock_guard<std::mutex> lock(poll_mu_);
      if (stop_) break;
      poll_ctx_ = &ctx;
    }
    v1::AcquireJobRequest req;
    req.set_worker(worker_);
    req.set_wait_ms(options_.wait_ms);
    v1::AcquireJobResponse resp;
    grpc::Status s = Stub()->AcquireJob(&ctx, req, &resp);
    {
      std::lock_guard<std::mutex> lock(poll_mu_);
      poll_ctx_ = nullptr;
    }
    if (stop_) break;
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      worker_.clear();  // the scheduler forgot us (restarted): register again
      if (options_.on_registered) options_.on_registered(false);
      continue;
    }
    if (!s.ok()) {
      spdlog::warn("AcquireJob failed ({}); retrying in {} ms", s.error_message(), backoff_ms);
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      Reconnect();
      backoff_ms = std::min(backoff_ms * 2, 2000);
      continue;
    }
    backoff_ms = 200;
    if (resp.has_assignment()) RunJob(resp.assignment());
  }
  spdlog::info("worker {} stopped", options_.name);
  return 0;
}

// What reproduces the run: the job as the scheduler gave it (spec and
// hyperparameters), the digests of its datasets and base model files, the
// engine and libtorch versions, and what the run found.
void WriteManifest(const v1::Assignment& a, const engine::TrainPlan& plan,
                   const engine::TrainResult& r, const std::string& path) {
  std::string job_json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(a.job(), &job_json, options);
  nlohmann::json files = nlohmann::json::object();
  for (const v1::ModelFile& f : a.base_model().files()) files[f.path()] = f.sha256();
  nlohmann::json m = {
      {"version", 1},
      {"job", nlohmann::json::parse(job_json, nullptr, false)},
      {"training_dataset", {{"name", a.training_dataset().name()},
                            {"sha256", a.training_dataset_sha256()}}},
      {"validation_dataset", {{"name", a.validation_dataset().name()},
                              {"sha256", a.validation_dataset_sha256()}}},
      {"base_model", {{"name", a.base_model().name()}, {"files", files}}},
      {"engine", {{"tuneforge", engine::kEngineVersion}, {"libtorch", engine::LibtorchVersion()}}},
      {"run", {{"train_examples", plan.train_examples},
               {"validation_examples", plan.validation_examples},
               {"train_sequences", plan.train_sequences},
               {"truncated_examples", plan.truncated_examples},
               {"parameter_count", plan.parameter_count},
               {"trainable_parameters", plan.trainable_parameters},
               {"steps", r.steps},
               {"final_train_loss", r.final_train_loss},
               {"final_validation_loss", r.final_validation_loss},
               {"best_step", r.best_step},
               {"best_validation_loss", r.best_validation_loss},
               {"stop_reason", r.stop_reason}}}};
  std::ofstream(path) << m.dump(2) << "\n";
}

absl::Status Agent::Retrying(const std::string& what, const std::function<absl::Status()>& call,
                             const std::function<bool()>& give_up_now, bool out_of_space) {
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(options_.outage_seconds);
  int backoff_ms = 100;
  while (true) {
    absl::Status s = call();
    const bool transient = absl::IsUnavailable(s) || absl::IsCancelled(s) ||
                           absl::IsDeadlineExceeded(s) ||
                           (out_of_space && absl::IsResourceExhausted(s));
    if (!transient || std::chrono::steady_clock::now() >= give_up || give_up_now()) return s;
    spdlog::warn("{}: {}; trying again in {} ms", what, s.ToString(), backoff_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    Reconnect();
    backoff_ms = std::min(backoff_ms * 2, 2000);
  }
}

void Agent::RunJob(const v1::Assignment& a) {
  const std::string& job = a.job().name();
  spdlog::info("{}: acquired (attempt {})", job, a.job().attempt());
  ++gauges_.jobs;
  gauges_.busy = true;
  // However the job ends, the worker is idle again.
  struct Idle {
    WorkerGauges& g;
    ~Idle() {
      g.busy = false;
      g.tokens_per_second = 0;
    }
  } idle{gauges_};

  // Events reach the scheduler exactly once, across its restarts.
  EventReporter reporter([this] { return Stub(); }, job, a.lease(), [this] { Reconnect(); });
  // The job's own folder: checkpoints (a later attempt on this host resumes
  // from them), the metrics, and the trained model until it is uploaded.
  const std::string job_dir =
      options_.cache_dir + "/jobs/" + a.job().name().substr(a.job().name().find('/') + 1);
  const std::string output_dir = job_dir + "/model";
  {
    std::error_code ec;
    std::filesystem::create_directories(job_dir, ec);
  }
  const std::string metrics_path = job_dir + "/metrics.csv";
  bool last_checkpoint_uploaded = true;
  JobObserver* watched = nullptr;  // for lease_lost, once the observer exists
  auto lease_lost = [&] { return watched != nullptr && watched->lease_lost.load(); };
  JobObserver observer(
      &reporter, a, &stop_, metrics_path,
      [&](const std::string& dir, const std::string& prefix) {
        // Through a scheduler restart the upload waits (training with it):
        // the checkpoint is what any host resumes from.
        absl::Status s = Retrying(job + ": checkpoint upload", [&] {
          absl::Status up = UploadFolder(a, dir, prefix);
          if (up.ok() && std::filesystem::exists(metrics_path)) {
            up = UploadFile(a, metrics_path, prefix + "metrics.csv");
          }
          return up;
        }, lease_lost);
        last_checkpoint_uploaded = s.ok();
        return s;
      },
      &gauges_);
  watched = &observer;

  // Heartbeats: renew the lease, learn of cancellation, and let the reporter
  // forget the events the scheduler has committed. Through a scheduler
  // outage they keep trying; the scheduler renews running jobs' leases when
  // it starts again.
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_done = false;
  std::atomic<bool> finishing{false};  // the job is ending: a lost lease is expected
  std::thread heartbeat([&] {
    std::unique_lock<std::mutex> lock(hb_mu);
    while (!hb_cv.wait_for(lock, std::chrono::milliseconds(heartbeat_interval_ms_),
                           [&] { return hb_done; })) {
      lock.unlock();
      grpc::ClientContext ctx;
      SetDeadline(ctx, std::chrono::milliseconds(heartbeat_interval_ms_ * 2));
      v1::HeartbeatRequest req;
      req.set_worker(worker_);
      req.set_job(job);
      req.set_lease(a.lease());
      req.set_step(observer.step());
      v1::HeartbeatResponse resp;
      grpc::Status s = Stub()->Heartbeat(&ctx, req, &resp);
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) Reconnect();
      if (s.ok()) {
        reporter.Acknowledge(resp.last_report_sequence());
        if (resp.cancel_requested()) observer.cancelled = true;
        if (resp.pause_requested()) observer.paused = true;
      }
      if (s.error_code() == grpc::StatusCode::ABORTED && !finishing &&
          !observer.lease_lost.exchange(true)) {
        spdlog::warn("{}: lease lost ({}); stopping", job, s.error_message());
        reporter.Abandon();
      }
      lock.lock();
    }
  });

  v1::JobState outcome = v1::JOB_STATE_SUCCEEDED;
  std::string error;
  try {
    auto load = [&](const v1::Dataset& d) -> std::vector<Example> {
      absl::StatusOr<std::string> path = FetchBlob(a, d.sha256());
      if (!path.ok()) throw std::runtime_error("cannot fetch dataset: " + path.status().ToString());
      absl::StatusOr<std::string> bytes = ReadFileToString(*path);
      if (!bytes.ok()) throw std::runtime_error(bytes.status().ToString());
      ValidatorOptions options;  // read it exactly as the scheduler validated it
      options.declared = FromProto(d.report().format());
      options.separator = d.separator();
      ParsedDataset parsed = ParseDataset(*bytes, options);
      if (parsed.report.error_count > 0) {
        throw std::runtime_error(d.name() + " has errors here but was READY on the scheduler");
      }
      return std::move(parsed.examples);
    };
    std::vector<Example> all = load(a.training_dataset());
    std::vector<Example> train, validation;
    if (a.has_validation_dataset()) {
      train = std::move(all);
      validation = load(a.validation_dataset());
    } else {
      Split split =
          SplitExamples(all, a.job().validation_split(), a.job().hyperparameters().seed());
      for (int64_t i : split.train) train.push_back(all[i]);
      for (int64_t i : split.validation) validation.push_back(all[i]);
    }
    absl::StatusOr<engine::TrainConfig> job_config = ConfigFromJob(a.job(), options_.threads);
    if (!job_config.ok()) {
      throw std::runtime_error("the job's hyperparameters: " +
                               std::string(job_config.status().message()));
    }
    engine::TrainConfig config = *std::move(job_config);
    absl::StatusOr<std::string> model = PrepareModel(a);
    if (!model.ok()) {
      throw std::runtime_error("cannot prepare the base model " + a.base_model().name() + ": " +
                               std::string(model.status().message()));
    }
    config.model = *model;
    config.output_dir = output_dir;
    config.checkpoint_dir = job_dir + "/checkpoints";
    config.resume = true;
    config.checkpoint_on_stop = true;
    if (absl::Status s = FetchCheckpoint(a, config.checkpoint_dir, metrics_path); !s.ok()) {
      throw std::runtime_error("cannot fetch checkpoint " + a.resume_checkpoint() + ": " +
                               std::string(s.message()));
    }
    engine::TrainResult r = engine::Train(config, train, validation, observer);
    if (!r.stop_reason.empty()) observer.Log("info", r.stop_reason);
    if (r.stopped) {
      outcome = observer.cancelled ? v1::JOB_STATE_CANCELLED : v1::JOB_STATE_PAUSED;
    } else if (!observer.lease_lost) {
      // The merged model, a LoRA run's adapter in PEFT's format, the
      // metrics and a manifest to reproduce the run.
      WriteManifest(a, observer.plan, r, job_dir + "/manifest.json");
      absl::StatusOr<std::string> events =
          WriteTensorBoardEvents(metrics_path, job_dir + "/tensorboard", options_.name);
      if (!events.ok()) throw std::runtime_error(std::string(events.status().message()));
      absl::Status uploaded = Retrying(job + ": model upload", [&] {
        absl::Status up = UploadFolder(a, output_dir, "model/");
        if (up.ok() && std::filesystem::exists(output_dir + "/adapter")) {
          up = UploadFolder(a, output_dir + "/adapter", "adapter/");
        }
        if (up.ok()) up = UploadFolder(a, job_dir, "");
        if (up.ok()) up = UploadFolder(a, job_dir + "/tensorboard", "tensorboard/");
        return up;
      }, lease_lost);
      if (absl::IsResourceExhausted(uploaded)) {
        observer.OutOfSpace(uploaded);  // handed back: it resumes once there is room
        outcome = v1::JOB_STATE_PAUSED;
      } else if (!uploaded.ok()) {
        throw std::runtime_error("cannot upload the trained model: " +
                                 std::string(uploaded.message()));
      }
    }
  } catch (const std::exception& e) {  // c10::Error included: one catch at the job boundary
    outcome = v1::JOB_STATE_FAILED;
    error = e.what();
    // c10::Error carries a C++ backtrace after the first line; keep the message.
    if (size_t nl = error.find("\nException raised from"); nl != std::string::npos) {
      error.resize(nl);
    }
    spdlog::error("{}: training failed: {}", job, error);
  }

  // Every event committed before the job ends or is handed back: through a
  // scheduler restart, or a disk that fills up and is freed, this waits.
  absl::Status delivered = observer.lease_lost
                               ? absl::AbortedError("lease lost")
                               : reporter.Drain(std::chrono::system_clock::now() +
                                                std::chrono::seconds(options_.outage_seconds));
  if (absl::IsAborted(delivered)) {
    observer.lease_lost = true;
  } else if (absl::IsUnavailable(delivered)) {
    spdlog::error("{}: the scheduler stayed unreachable for {} s ({}); giving the attempt up",
                  job, options_.outage_seconds, std::string(delivered.message()));
    observer.lease_lost = true;
  } else if (!delivered.ok()) {
    // The scheduler refused an event: the ones after it are lost, so the
    // job's record is incomplete. Say so instead of succeeding quietly.
    outcome = v1::JOB_STATE_FAILED;
    error = "the scheduler refused a training event (" + std::string(delivered.message()) +
            "); events after it were lost";
    spdlog::error("{}: {}", job, error);
  }
  auto stop_heartbeats = [&] {
    {
      std::lock_guard<std::mutex> lock(hb_mu);
      hb_done = true;
    }
    hb_cv.notify_all();
    heartbeat.join();
  };

  if (observer.lease_lost) {
    stop_heartbeats();
    spdlog::info("{}: lost its lease; its checkpoints stay in {}", job, job_dir);
    return;
  }
  finishing = true;
  if (outcome == v1::JOB_STATE_PAUSED) {  // stopping, paused, or no room: hand it back
    const std::string reason =
        observer.out_of_space ? observer.out_of_space_reason()  // "the server's disk is full (...)"
        : observer.paused     ? "paused by the user"
                              : "the worker is stopping";
    // With a full disk the hand-back itself may not commit yet: it is tried
    // until there is room again (heartbeats keep the lease meanwhile).
    absl::Status s = Retrying(
        job + ": hand-back",
        [&] {
          grpc::ClientContext ctx;
          SetDeadline(ctx, kCallTimeout);
          v1::ReleaseJobRequest req;
          req.set_job(job);
          req.set_lease(a.lease());
          req.set_reason(reason);
          v1::ReleaseJobResponse resp;
          return FromGrpc(Stub()->ReleaseJob(&ctx, req, &resp));
        },
        lease_lost, /*out_of_space=*/true);
    stop_heartbeats();
    spdlog::info("{}: handed back ({}){}", job, reason,
                 s.ok() ? "" : "; the scheduler refused: " + std::string(s.message()));
    if (s.ok() && last_checkpoint_uploaded && !observer.out_of_space) {
      std::error_code ec;
      std::filesystem::remove_all(job_dir, ec);  // the scheduler holds the checkpoint
    }
    return;
  }
  {
    std::error_code ec;
    std::filesystem::remove_all(job_dir, ec);  // the model is uploaded, or not wanted
  }
  absl::Status s = Retrying(job + ": finish", [&] {
    grpc::ClientContext ctx;
    SetDeadline(ctx, kCallTimeout);
    v1::FinishJobRequest req;
    req.set_job(job);
    req.set_lease(a.lease());
    req.set_state(outcome);
    req.set_error(error.substr(0, 4000));
    v1::FinishJobResponse resp;
    return FromGrpc(Stub()->FinishJob(&ctx, req, &resp));
  }, lease_lost);
  stop_heartbeats();
  spdlog::info("{}: finished {}{}", job, v1::JobState_Name(outcome),
               s.ok() ? "" : " (scheduler refused: " + std::string(s.message()) + ")");
}

}  // namespace tuneforge
