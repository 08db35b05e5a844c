#include "client/format.h"

#include <gtest/gtest.h>

#include <sstream>

namespace tuneforge::cli {
namespace {

TEST(FormatTest, YamlOfAJob) {
  v1::Job job;
  job.set_name("jobs/abc");
  job.set_state(v1::JOB_STATE_RUNNING);
  (*job.mutable_labels())["team"] = "hr: \"quoted\"";
  job.mutable_hyperparameters()->set_epochs(3);
  job.add_attempt_errors("lease expired\non worker w1");
  job.add_attempt_errors("stalled");
  const std::string yaml = ToYaml(job);
  EXPECT_NE(yaml.find("name: \"jobs/abc\"\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("state: \"JOB_STATE_RUNNING\"\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("labels:\n  team: \"hr: \\\"quoted\\\"\"\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("attemptErrors:\n  - \"lease expired\\non worker w1\"\n  - \"stalled\"\n"),
            std::string::npos)
      << yaml;
  EXPECT_EQ(ToYaml(v1::Job()), "{}\n");
}

TEST(FormatTest, LiveFrameFitsItsWidth) {
  LiveState state;
  state.job = "jobs/abc";
  v1::JobEvent e;
  e.set_sequence(4);
  for (int step = 1; step <= 50; ++step) {
    e.mutable_metrics()->set_step(step);
    e.mutable_metrics()->set_total_steps(100);
    e.mutable_metrics()->set_epoch_progress(step / 50.0);
    e.mutable_metrics()->set_loss(3.0 - step * 0.01);
    state.Apply(e);
  }
  e.Clear();
  e.mutable_sample()->set_prompt("a very long prompt\nwith a newline and ünïcode");
  e.mutable_sample()->set_completion(std::string(300, 'x'));
  state.Apply(e);
  for (int width : {40, 80, 200}) {
    for (const std::string& line : LiveFrame(state, width)) {
      size_t columns = 0;
      for (unsigned char c : line) columns += (c & 0xC0) != 0x80;
      EXPECT_LE(columns, static_cast<size_t>(width)) << line;
      EXPECT_EQ(line.find('\n'), std::string::npos);
    }
  }
  const std::vector<std::string> frame = LiveFrame(state, 100);
  EXPECT_NE(frame[2].find("step  50/100"), std::string::npos) << frame[2];
  EXPECT_NE(frame[2].find(" 50%"), std::string::npos) << frame[2];
  EXPECT_EQ(frame[4].rfind("loss █", 0), 0u) << frame[4];  // falling: highest first
}

TEST(FormatTest, TablesAlignAndFitTheTerminal) {
  const std::vector<std::vector<std::string>> rows = {
      {"jobs/a", "RUNNING", std::string(60, 'x')}, {"jobs/bbbb", "QUEUED", "short ünï"}};
  const std::string wide = Table({"NAME", "STATE", "MODEL"}, rows, 0);
  EXPECT_EQ(wide.substr(0, wide.find('\n')), "NAME       STATE    MODEL");
  EXPECT_NE(wide.find("jobs/bbbb  QUEUED   short ünï\n"), std::string::npos) << wide;
  const std::string narrow = Table({"NAME", "STATE", "MODEL"}, rows, 40);
  std::istringstream lines(narrow);
  for (std::string line; std::getline(lines, line);) {
    size_t columns = 0;
    for (unsigned char c : line) columns += (c & 0xC0) != 0x80;
    EXPECT_LE(columns, 40u) << line;
  }
  EXPECT_NE(narrow.find("…"), std::string::npos) << narrow;
}

TEST(FormatTest, Durations) {
  EXPECT_EQ(Duration(4.4), "4s");
  EXPECT_EQ(Duration(65), "1m05s");
  EXPECT_EQ(Duration(7380), "2h03m");
}

TEST(FormatTest, EventLines) {
  v1::JobEvent e;
  e.set_sequence(3);
  e.mutable_state_change()->set_from(v1::JOB_STATE_QUEUED);
  e.mutable_state_change()->set_to(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(EventLine(e), "#3    state QUEUED -> RUNNING");
  v1::JobEvent m;
  m.set_sequence(12);
  m.mutable_metrics()->set_epoch(1);
  m.mutable_metrics()->set_step(10);
  m.mutable_metrics()->set_total_steps(60);
  m.mutable_metrics()->set_loss(2.34567);
  m.mutable_metrics()->set_eta_seconds(75);
  std::string line = EventLine(m);
  EXPECT_NE(line.find("epoch 1 step 10/60  train_loss 2.3457"), std::string::npos) << line;
  EXPECT_NE(line.find("eta 1m15s"), std::string::npos) << line;
}

TEST(FormatTest, ProblemsSayWhere) {
  v1::ValidationReport r;
  r.set_error_count(3);
  v1::DatasetProblem* p = r.add_problems();
  p->set_code("missing_field");
  p->set_line(4);
  p->set_column(1);
  p->set_record(3);
  p->set_field("/completion");
  p->set_message("record has no \"completion\" field");
  std::string text = ReportProblems(r);
  EXPECT_NE(text.find("error: line 4, column 1, record 3, field /completion: record has no"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("and 2 more"), std::string::npos);
}

}  // namespace
}  // namespace tuneforge::cli
