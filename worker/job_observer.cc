#include "worker/job_observer.h"

#include <spdlog/spdlog.h>

#include "common/metrics_proto.h"
#include "common/settings_proto.h"
#include "common/status_macros.h"

namespace tuneforge {

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

JobObserver::JobObserver(EventReporter* reporter, const v1::Assignment& a,
                         const std::atomic<bool>* stop, std::string metrics_path,
                         UploadCheckpoint upload, WorkerGauges* gauges)
    : gauges_(gauges),
      reporter_(reporter),
      job_(a.job().name()),
      agent_stop_(stop),
      metrics_path_(std::move(metrics_path)),
      upload_(std::move(upload)) {}

void JobObserver::OnStart(const engine::TrainPlan& p) {
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

void JobObserver::OnMetrics(const engine::StepMetrics& m) {
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
  ToProto(m, e.mutable_metrics());
  Send(std::move(e));
}

void JobObserver::OnEvaluation(const engine::EvalMetrics& m) {
  metrics_.Row(m);
  v1::JobEvent e;
  ToProto(m, e.mutable_evaluation());
  Send(std::move(e));
}

void JobObserver::OnSample(const std::string& prompt, const std::string& completion,
                           int64_t step) {
  v1::JobEvent e;
  e.mutable_sample()->set_prompt(prompt);
  e.mutable_sample()->set_completion(completion);
  e.mutable_sample()->set_step(step);
  Send(std::move(e));
}

void JobObserver::OnCheckpoint(int64_t step, int epoch, const std::string& dir, bool best) {
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

void JobObserver::Log(const std::string& level, const std::string& message) {
  v1::JobEvent e;
  e.mutable_log()->set_level(level);
  e.mutable_log()->set_message(message);
  Send(std::move(e));
}

bool JobObserver::ShouldStop() {
  if (reporter_->lease_lost()) lease_lost = true;
  if (absl::IsResourceExhausted(reporter_->last_break())) OutOfSpace(reporter_->last_break());
  return cancelled || paused || lease_lost || out_of_space || *agent_stop_;
}

void JobObserver::OutOfSpace(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!out_of_space.exchange(true)) out_of_space_reason_ = std::string(why.message());
}

std::string JobObserver::out_of_space_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return out_of_space_reason_;
}

void JobObserver::Send(v1::JobEvent event) {
  if (!reporter_->Send(std::move(event)) && reporter_->lease_lost()) lease_lost = true;
}

}  // namespace tuneforge
