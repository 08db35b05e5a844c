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
#include "worker/tensorboard.h"
#include "worker/engine/metrics_csv.h"
#include "worker/engine/trainer.h"

namespace tuneforge {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(30);

void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::StatusOr<engine::TrainConfig> ConfigFromJob(const v1::Job& job, int threads) {
  engine::TrainConfig c;
  ASSIGN_OR_RETURN(static_cast<TrainingSettings&>(c), SettingsFromProto(job.hyperparameters()));
  if (job.method() == v1::TRAINING_METHOD_LORA) {
    c.lora.rank = job.lora().rank();
    c.lora.alpha = job.lora().alpha();
    c.lora.dropout = job.lora().dropout();
    c.lora.targets.assign(job.lora().target_modules().begin(), job.lora().target_modules().end());
  }
  c.threads = threads;
  return c;
}

// Turns engine callbacks into ReportEvents messages, and answers the
// engine's ShouldStop() from the heartbeat's findings.
class JobObserver : public engine::TrainObserver {
 public:
  // Uploads a checkpoint folder (and the metrics so far) under `prefix`.
  using UploadCheckpoint = std::function<absl::Status(const std::string& dir,
                                                      const std::string& prefix)>;

  JobObserver(EventReporter* reporter, const v1::Assignment& a, const std::atomic<bool>* stop,
              std::string metrics_path, UploadCheckpoint upload, WorkerGauges* gauges)
      : gauges_(gauges),
        reporter_(reporter),
        job_(a.job().name()),
        agent_stop_(stop),
        metrics_path_(std::move(metrics_path)),
        upload_(std::move(upload)) {}

  void OnStart(const engine::TrainPlan& p) override {
    plan = p;
    // Counters count from where this attempt starts: its first report's
    // steps and tokens are counted like every later one's.
    last_report_ = std::chrono::steady_clock::now();
    last_report_step_ = p.resumed_from_step;
    last_report_tokens_ = p.resumed_tokens_seen;
    metrics_.Open(metrics_path_, p.resumed_from_step);
    v1::JobEvent e;
    v1::TrainingStarted* s = e.mutable_started();
    s->set_train_examples(p.train_examples);
    s->set_validation_examples(p.validation_examples);
    s->set_total_steps(p.total_steps);
    s->set_parameter_count(p.parameter_count);
    s->set_truncated_examples(p.truncated_examples);
    s->set_threads(p.threads);
    s->set_trainable_parameters(p.trainable_parameters);
    s->set_device(p.device);
    s->set_precision(p.precision);
    s->set_chat_template(p.chat_template);
    s->set_packed_rows(p.packed_rows);
    s->set_resumed_from_step(p.resumed_from_step);
    Send(std::move(e));
  }
  void OnMetrics(const engine::StepMetrics& m) override {
    metrics_.Row(m);
    const auto now = std::chrono::steady_clock::now();
    if (m.step > last_report_step_) {
      gauges_->step_seconds = std::chrono::duration<double>(now - last_report_).count() /
                              double(m.step - last_report_step_);
      gauges_->steps += m.step - last_report_step_;
      gauges_->tokens += m.tokens_seen - last_report_tokens_;
    }
    last_report_ = now;
    last_report_step_ = m.step;
    last_report_tokens_ = m.tokens_seen;
    gauges_->tokens_per_second = m.tokens_per_second;
    step_ = m.step;
    v1::JobEvent e;
    v1::TrainingMetrics* p = e.mutable_metrics();
    p->set_epoch(m.epoch);
    p->set_step(m.step);
    p->set_total_steps(m.total_steps);
    p->set_loss(m.loss);
    p->set_learning_rate(m.learning_rate);
    p->set_grad_norm(m.grad_norm);
    p->set_tokens_per_second(m.tokens_per_second);
    p->set_tokens_seen(m.tokens_seen);
    p->set_epoch_progress(m.epoch_progress);
    p->set_eta_seconds(m.eta_seconds);
    Send(std::move(e));
  }
  void OnEvaluation(const engine::EvalMetrics& m) override {
    metrics_.Row(m);
    v1::JobEvent e;
    v1::Evaluation* p = e.mutable_evaluation();
    p->set_epoch(m.epoch);
    p->set_step(m.step);
    p->set_validation_loss(m.loss);
    p->set_perplexity(m.perplexity);
    p->set_token_accuracy(m.token_accuracy);
    Send(std::move(e));
  }
  void OnSample(const std::string& prompt, const std::string& completion,
                int64_t step) override {
    v1::JobEvent e;
    e.mutable_sample()->set_prompt(prompt);
    e.mutable_sample()->set_completion(completion);
    e.mutable_sample()->set_step(step);
    Send(std::move(e));
  }
  void OnCheckpoint(int64_t step, int epoch, const std::string& dir, bool best) override {
    const std::string name = dir.substr(dir.rfind('/') + 1);
    // Uploaded before it is reported: the event tells the scheduler that
    // any host can resume from it now.
    absl::Status uploaded = lease_lost || out_of_space ? absl::AbortedError("not sent")
                                                       : upload_(dir, "checkpoint/" + name + "/");
    if (!uploaded.ok()) {
      spdlog::warn("{}: checkpoint {} stays on this worker only: {}", job_, name,
                   uploaded.ToString());
    }
    // The scheduler's disk is full: this attempt ends (see RunJob).
    if (absl::IsResourceExhausted(uploaded)) OutOfSpace(uploaded);
    v1::JobEvent e;
    v1::Checkpoint* c = e.mutable_checkpoint();
    c->set_name(job_ + "/checkpoints/" + name);
    c->set_step(step);
    c->set_epoch(epoch);
    c->set_best(best);
    c->set_uploaded(uploaded.ok());
    Send(std::move(e));
  }
  void Log(const std::string& level, const std::string& message) {
    v1::JobEvent e;
    e.mutable_log()->set_level(level);
    e.mutable_log()->set_message(message);
    Send(std::move(e));
  }
  bool ShouldStop() override {
    if (reporter_->lease_lost()) lease_lost = true;
    if (absl::IsResourceExhausted(reporter_->last_break())) OutOfSpace(reporter_->last_break());
    return cancelled || paused || lease_lost || out_of_space || *agent_stop_;
  }
  // The scheduler cannot store what this attempt produces: it stops, and the
  // job is handed back saying so.
  void OutOfSpace(const absl::Status& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!out_of_space.exchange(true)) out_of_space_reason_ = std::string(why.message());
  }
  std::string out_of_space_reason() const {
    std::lock_guard<std::mutex> lock(mu_);
    return out_of_space_reason_;
  }

  int64_t step() const { return step_; }
  engine::TrainPlan plan;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> paused{false};  // the scheduler asked: checkpoint and hand it back
  std::atomic<bool> lease_lost{false};
  std::atomic<bool> out_of_space{false};

 private:
  void Send(v1::JobEvent event) {
    if (!reporter_->Send(std::move(event)) && reporter_->lease_lost()) lease_lost = true;
  }

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

}  // namespace

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

absl::StatusOr<std::string> Agent::FetchBlob(const v1::Assignment& a, const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("bad blob digest " + sha256);
  // A scheduler restarting as the job starts is waited for, not a failure
  // of the job.
  absl::StatusOr<std::string> fetched;
  (void)Retrying(
      a.job().name() + ": fetching blob " + sha256,
      [&] {
        fetched = FetchBlobOnce(a, sha256);
        return fetched.status();
      },
      [] { return false; });
  return fetched;
}

absl::StatusOr<std::string> Agent::FetchBlobOnce(const v1::Assignment& a,
                                                 const std::string& sha256) {
  std::string path = options_.cache_dir + "/" + sha256;
  if (std::filesystem::exists(path)) return path;
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::minutes(30));
  v1::FetchBlobRequest req;
  req.set_sha256(sha256);
  req.set_job(a.job().name());
  req.set_lease(a.lease());
  auto reader = Stub()->FetchBlob(&ctx, req);
  std::string tmp = path + ".part." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    Sha256 hash;
    v1::BlobChunk chunk;
    while (reader->Read(&chunk)) {
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      hash.Update(chunk.data());
    }
    grpc::Status s = reader->Finish();
    out.close();
    if (!s.ok() || !out) {
      std::filesystem::remove(tmp);
      return s.ok() ? absl::InternalError("cannot write " + tmp) : FromGrpc(s);
    }
    if (hash.HexDigest() != sha256) {
      std::filesystem::remove(tmp);
      return absl::DataLossError("fetched blob does not match its digest " + sha256);
    }
  }
  std::filesystem::rename(tmp, path);
  return path;
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

absl::StatusOr<std::string> Agent::PrepareModel(const v1::Assignment& a) {
  const v1::Model& model = a.base_model();
  const std::string id = model.name().substr(model.name().find('/') + 1);
  if (model.files().empty()) return id;  // a preset: the engine makes it from the seed
  namespace fs = std::filesystem;
  const std::string dir = options_.cache_dir + "/models/" + id;
  if (fs::exists(dir + "/.complete")) return dir;
  const std::string tmp = dir + ".part." + std::to_string(getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError("cannot create " + tmp + ": " + ec.message());
  for (const v1::ModelFile& f : model.files()) {
    if (f.path().empty() || f.path().find('/') != std::string::npos || f.path()[0] == '.') {
      return absl::InvalidArgumentError("model file name '" + f.path() + "' is not a plain name");
    }
    absl::StatusOr<std::string> blob = FetchBlob(a, f.sha256());
    if (!blob.ok()) return blob.status();
    // A hard link shares the cached bytes; a copy where links do not work.
    fs::create_hard_link(*blob, tmp + "/" + f.path(), ec);
    if (ec) fs::copy_file(*blob, tmp + "/" + f.path(), ec);
    if (ec) return absl::InternalError("cannot place " + f.path() + ": " + ec.message());
  }
  std::ofstream(tmp + "/.complete") << model.name() << "\n";
  // Only complete folders are renamed into place, and renaming onto an
  // existing folder fails: when local workers race, the first one wins and
  // the others use its folder, which nobody removes while a job reads it.
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    if (fs::exists(dir + "/.complete")) return dir;
    return absl::InternalError("cannot move " + tmp + " to " + dir);
  }
  return dir;
}

absl::Status Agent::UploadFile(const v1::Assignment& a, const std::string& path,
                               const std::string& artifact) {
  // Two passes over the file, a chunk at a time: the digest first (it goes
  // in the header), then the bytes, unless the scheduler has them already.
  constexpr size_t kChunk = 1 << 20;
  std::string chunk(kChunk, '\0');
  auto read_chunk = [&](std::ifstream& in) {
    in.read(chunk.data(), static_cast<std::streamsize>(kChunk));
    return static_cast<size_t>(in.gcount());
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError("cannot open " + path);
  Sha256 hash;
  int64_t size = 0;
  for (size_t n; (n = read_chunk(in)) > 0; size += static_cast<int64_t>(n)) {
    hash.Update(std::string_view(chunk.data(), n));
  }
  if (in.bad()) return absl::InternalError("cannot read " + path);
  in.clear();
  in.seekg(0);
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::minutes(30));
  v1::UploadArtifactResponse resp;
  auto writer = Stub()->UploadArtifact(&ctx, &resp);
  v1::UploadArtifactRequest req;
  v1::UploadArtifactRequest::Header* h = req.mutable_header();
  h->set_job(a.job().name());
  h->set_lease(a.lease());
  h->set_artifact(artifact);
  h->set_size_bytes(size);
  h->set_sha256(hash.HexDigest());
  // A write fails once the server has ended the call (it holds the bytes,
  // or refused the header); Finish says which.
  bool ok = writer->Write(req);
  for (size_t n; ok && (n = read_chunk(in)) > 0;) {
    req.set_chunk(chunk.data(), n);
    ok = writer->Write(req);
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

absl::Status Agent::UploadFolder(const v1::Assignment& a, const std::string& dir,
                                 const std::string& prefix) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    RETURN_IF_ERROR(UploadFile(a, entry.path().string(), prefix + entry.path().filename().string()));
  }
  if (ec) return absl::InternalError("cannot list " + dir + ": " + ec.message());
  return absl::OkStatus();
}

absl::Status Agent::FetchCheckpoint(const v1::Assignment& a, const std::string& checkpoints,
                                    const std::string& metrics) {
  namespace fs = std::filesystem;
  const std::string& name = a.resume_checkpoint();
  if (!name.empty() && (name.size() != 13 || name.rfind("step-", 0) != 0 ||
                        name.find_first_not_of("0123456789", 5) != std::string::npos)) {
    return absl::InvalidArgumentError("resume checkpoint '" + name + "' is not step-NNNNNNNN");
  }
  // The scheduler's checkpoint is the one to resume from: a newer one an
  // earlier attempt left on this host was never reported whole (the events
  // of its last steps may be lost), so it goes, and those steps run again.
  // Names are zero-padded: they compare as their steps do.
  std::error_code ec;
  bool have = false;
  std::vector<fs::path> newer;
  for (const fs::directory_entry& e : fs::directory_iterator(checkpoints, ec)) {
    const std::string local = e.path().filename().string();
    if (local.rfind("step-", 0) != 0) continue;
    if (local > name) newer.push_back(e.path());
    have = have || (local == name && fs::exists(e.path() / "trainer_state.json"));
  }
  for (const fs::path& p : newer) fs::remove_all(p, ec);
  if (name.empty() || have) return absl::OkStatus();
  const std::string tmp = checkpoints + "/" + name + ".fetch";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError("cannot create " + tmp + ": " + ec.message());
  for (const v1::ModelFile& f : a.resume_checkpoint_files()) {
    if (f.path().empty() || f.path().find('/') != std::string::npos || f.path()[0] == '.') {
      return absl::InvalidArgumentError("checkpoint file name '" + f.path() + "' is not a plain name");
    }
    ASSIGN_OR_RETURN(std::string blob, FetchBlob(a, f.sha256()));
    const std::string into = f.path() == "metrics.csv" ? metrics : tmp + "/" + f.path();
    fs::remove(into, ec);
    fs::copy_file(blob, into, ec);
    if (ec) return absl::InternalError("cannot place " + f.path() + ": " + ec.message());
  }
  if (!fs::exists(tmp + "/trainer_state.json")) {
    return absl::DataLossError("checkpoint " + name + " has no trainer_state.json");
  }
  fs::rename(tmp, checkpoints + "/" + name, ec);
  if (ec) return absl::InternalError("cannot move " + tmp + ": " + ec.message());
  return absl::OkStatus();
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
