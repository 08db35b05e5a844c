#include "common/metrics_proto.h"

namespace tuneforge {

void ToProto(const StepMetrics& m, v1::TrainingMetrics* out) {
  out->set_epoch(m.epoch);
  out->set_step(m.step);
  out->set_total_steps(m.total_steps);
  out->set_loss(m.loss);
  out->set_learning_rate(m.learning_rate);
  out->set_grad_norm(m.grad_norm);
  out->set_tokens_per_second(m.tokens_per_second);
  out->set_tokens_seen(m.tokens_seen);
  out->set_epoch_progress(m.epoch_progress);
  out->set_eta_seconds(m.eta_seconds);
}

void ToProto(const EvalMetrics& m, v1::Evaluation* out) {
  out->set_epoch(m.epoch);
  out->set_step(m.step);
  out->set_validation_loss(m.validation_loss);
  out->set_perplexity(m.perplexity);
  out->set_token_accuracy(m.token_accuracy);
}

StepMetrics FromProto(const v1::TrainingMetrics& m) {
  return {m.epoch(),         m.step(),        m.total_steps(),       m.loss(),
          m.learning_rate(), m.grad_norm(),   m.tokens_per_second(), m.tokens_seen(),
          m.epoch_progress(), m.eta_seconds()};
}

EvalMetrics FromProto(const v1::Evaluation& m) {
  return {m.epoch(), m.step(), m.validation_loss(), m.perplexity(), m.token_accuracy()};
}

}  // namespace tuneforge
