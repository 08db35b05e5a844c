#include "server/convert.h"

#include <functional>

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

v1::Job MinimalJob() {
  v1::Job job;
  job.set_base_model("models/tiny-gpt2");
  job.set_training_dataset("datasets/abc123");
  return job;
}

TEST(ConvertTest, NamesAndIds) {
  EXPECT_EQ(*IdFromName("jobs/abc", "jobs", "name"), "abc");
  EXPECT_EQ(*IdFromName("abc", "jobs", "name"), "abc");
  auto bad = IdFromName("jobs/../etc", "jobs", "name");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("name:"), std::string::npos);
  EXPECT_FALSE(IdFromName("", "jobs", "name").ok());
  EXPECT_FALSE(IdFromName("datasets/x", "jobs", "name").ok());
}

TEST(ConvertTest, DefaultsFillUnsetHyperparameters) {
  auto spec = JobSpecFromProto(MinimalJob());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->base_model, "tiny-gpt2");
  EXPECT_EQ(spec->training_dataset, "abc123");
  EXPECT_EQ(spec->validation_split, 0.1);
  EXPECT_EQ(spec->hyperparameters.epochs, 3);
  EXPECT_EQ(spec->hyperparameters.seed, 42u);
  EXPECT_EQ(spec->hyperparameters.weight_decay, 0.01);
  EXPECT_EQ(spec->hyperparameters.chat_template, "auto");
  EXPECT_EQ(spec->hyperparameters.precision, "auto");
  EXPECT_TRUE(spec->hyperparameters.group_by_length);
  EXPECT_FALSE(spec->hyperparameters.packing);
  EXPECT_EQ(spec->hyperparameters.divergence_factor, 4.0);
  EXPECT_EQ(spec->hyperparameters.keep_checkpoints, 2);
  EXPECT_EQ(spec->hyperparameters.sample_count, 2);
}

TEST(ConvertTest, TrainingOptionsRoundTripAndAreChecked) {
  v1::Job job = MinimalJob();
  v1::Hyperparameters* h = job.mutable_hyperparameters();
  h->set_train_on_prompt(true);
  h->set_chat_template("llama3");
  h->set_packing(true);
  h->set_group_by_length(false);
  h->set_warmup_ratio(0.1);
  h->set_divergence_factor(0);
  h->set_recompute_activations(true);
  h->set_precision("bf16");
  h->set_keep_checkpoints(5);
  h->set_sample_count(0);
  auto spec = JobSpecFromProto(job);
  ASSERT_TRUE(spec.ok()) << spec.status();
  Job stored;
  stored.id = "j1";
  stored.spec = *spec;
  const v1::Hyperparameters back = ToProto(stored).hyperparameters();
  EXPECT_TRUE(back.train_on_prompt());
  EXPECT_EQ(back.chat_template(), "llama3");
  EXPECT_TRUE(back.packing());
  EXPECT_FALSE(back.group_by_length());
  EXPECT_EQ(back.warmup_ratio(), 0.1);
  EXPECT_EQ(back.divergence_factor(), 0);
  EXPECT_TRUE(back.recompute_activations());
  EXPECT_EQ(back.precision(), "bf16");
  EXPECT_EQ(back.keep_checkpoints(), 5);
  EXPECT_EQ(back.sample_count(), 0);
  // Bounds, each naming its field.
  const std::vector<std::pair<std::function<void(v1::Hyperparameters*)>, std::string>> bad = {
      {[](v1::Hyperparameters* p) { p->set_chat_template("vicuna"); }, "chat_template"},
      {[](v1::Hyperparameters* p) { p->set_warmup_ratio(1); }, "warmup_ratio"},
      {[](v1::Hyperparameters* p) { p->set_divergence_factor(1.2); }, "divergence_factor"},
      {[](v1::Hyperparameters* p) { p->set_precision("fp16"); }, "precision"},
      {[](v1::Hyperparameters* p) { p->set_keep_checkpoints(0); }, "keep_checkpoints"},
      {[](v1::Hyperparameters* p) { p->set_sample_count(17); }, "sample_count"}};
  for (const auto& [set, field] : bad) {
    v1::Job wrong = MinimalJob();
    set(wrong.mutable_hyperparameters());
    absl::Status status = JobSpecFromProto(wrong).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(status.message().find("job.hyperparameters." + field), std::string::npos) << status;
  }
}

TEST(ConvertTest, ExplicitZeroesAreKeptWhereMeaningful) {
  v1::Job job = MinimalJob();
  job.mutable_hyperparameters()->set_weight_decay(0);
  job.mutable_hyperparameters()->set_seed(0);
  job.set_validation_split(0);
  auto spec = JobSpecFromProto(job);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->hyperparameters.weight_decay, 0);
  EXPECT_EQ(spec->hyperparameters.seed, 0u);
  EXPECT_EQ(spec->validation_split, 0);
}

TEST(ConvertTest, BoundsNameTheField) {
  v1::Job job = MinimalJob();
  job.mutable_hyperparameters()->set_epochs(5000);
  auto spec = JobSpecFromProto(job);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("job.hyperparameters.epochs"), std::string::npos);

  job = MinimalJob();
  job.mutable_hyperparameters()->set_learning_rate(-1);
  EXPECT_NE(JobSpecFromProto(job).status().message().find("learning_rate"), std::string::npos);

  job = MinimalJob();
  job.set_validation_split(1.5);
  EXPECT_NE(JobSpecFromProto(job).status().message().find("validation_split"),
            std::string::npos);

  job = MinimalJob();
  (*job.mutable_labels())["Bad Key"] = "x";
  EXPECT_NE(JobSpecFromProto(job).status().message().find("job.labels"), std::string::npos);
  job = MinimalJob();
  (*job.mutable_labels())["team"] = "hr; rm -rf /";
  EXPECT_NE(JobSpecFromProto(job).status().message().find("[A-Za-z0-9._-]"), std::string::npos);
  job = MinimalJob();
  job.set_suffix("hr\x1b[31mred");
  EXPECT_NE(JobSpecFromProto(job).status().message().find("job.suffix: control characters"),
            std::string::npos);
}

TEST(ConvertTest, NamesAreBoundedAndQuotedSafely) {
  const std::string huge(1 << 20, 'X');
  absl::StatusOr<std::string> id = IdFromName("jobs/" + huge, "jobs", "name");
  ASSERT_FALSE(id.ok());
  EXPECT_LT(id.status().message().size(), 300u);
  EXPECT_NE(IdFromName("jobs/a\nb", "jobs", "name").status().message().find("a\\nb"),
            std::string::npos);
  EXPECT_TRUE(CheckText("hr.json", "f", 256).ok());
  EXPECT_TRUE(CheckText("Ünïcode ok", "f", 256).ok());
  EXPECT_FALSE(CheckText(std::string(257, 'a'), "f", 256).ok());
  EXPECT_FALSE(CheckText("tab\there", "f", 256).ok());
}

TEST(ConvertTest, JobRoundTrip) {
  Job job;
  job.id = "j1";
  job.spec = *JobSpecFromProto(MinimalJob());
  job.spec.labels["team"] = "hr";
  job.state = JobState::kRunning;
  job.progress.step = 7;
  job.progress.has_validation_loss = true;
  job.progress.validation_loss = 1.5;
  job.worker = "w1";
  v1::Job p = ToProto(job);
  EXPECT_EQ(p.name(), "jobs/j1");
  EXPECT_EQ(p.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(p.worker(), "workers/w1");
  EXPECT_EQ(p.progress().validation_loss(), 1.5);
  auto again = JobSpecFromProto(p);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->labels, job.spec.labels);
  EXPECT_EQ(again->hyperparameters.learning_rate, job.spec.hyperparameters.learning_rate);
}

TEST(ConvertTest, EventRoundTrip) {
  Event e{"j1", 4, 1000, MetricsEvent{2, 10, 30, 1.25, 1e-3, 0.5, 900, 4000, 0.5, 20}};
  v1::JobEvent p = ToProto(e);
  EXPECT_EQ(p.job(), "jobs/j1");
  EXPECT_EQ(p.sequence(), 4);
  EXPECT_EQ(p.metrics().loss(), 1.25);
  auto back = EventFromProto(p);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(std::get<MetricsEvent>(back->payload).tokens_seen, 4000);
  v1::JobEvent state;
  state.mutable_state_change()->set_to(v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(EventFromProto(state).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tuneforge
