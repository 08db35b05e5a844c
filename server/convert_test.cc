#include "server/convert.h"

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
