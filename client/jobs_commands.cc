// `tuneforge jobs ...`: create, inspect, control (cancel, pause, resume) and
// follow fine-tuning jobs, and fetch what they report and produce.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/format.h"
#include "client/output.h"
#include "client/plot.h"
#include "client/transfer.h"
#include "client/watch_view.h"
#include "common/settings_flags.h"
#include "common/settings_proto.h"

namespace tuneforge::cli {
namespace {

// What the jobs subcommands parse into; the callbacks keep it alive.
struct JobFlags {
  std::string id;
  // create
  std::string model = "tiny-gpt2", train, validation, request_id;
  double split = -1;
  int priority = 0, lora_rank = 0;
  double lora_alpha = 0, lora_dropout = 0;
  std::vector<std::string> lora_targets;
  std::vector<std::string> labels;
  bool follow = false;
  TrainingSettings settings;
  std::vector<SettingFlag> setting_flags;
  // list
  std::string state, label, created_after, created_before;
  // events, watch
  int64_t after = 0;
  // download
  std::string artifact = "model", download_dir = ".";
  // metrics, plot
  bool csv = false;
  std::string plot_file = "loss.svg";
};

// The job `create` describes; throws CLI::ValidationError for a bad --label.
v1::Job JobFromFlags(const JobFlags& f) {
  v1::Job job;
  job.set_base_model(f.model.rfind("jobs/", 0) == 0 ? f.model : Name("models", f.model));
  job.set_training_dataset(Name("datasets", f.train));
  if (!f.validation.empty()) job.set_validation_dataset(Name("datasets", f.validation));
  if (f.split >= 0) job.set_validation_split(f.split);
  std::vector<std::string> given;
  for (const SettingFlag& s : f.setting_flags) {
    if (s.Given()) given.emplace_back(s.info->name);
  }
  SettingsToProto(f.settings, job.mutable_hyperparameters(), &given);
  if (f.lora_rank > 0) {
    job.set_method(v1::TRAINING_METHOD_LORA);
    job.mutable_lora()->set_rank(f.lora_rank);
    job.mutable_lora()->set_alpha(f.lora_alpha);
    job.mutable_lora()->set_dropout(f.lora_dropout);
    for (const std::string& t : f.lora_targets) job.mutable_lora()->add_target_modules(t);
  }
  job.set_priority(f.priority);
  job.set_request_id(f.request_id);
  for (const std::string& l : f.labels) {
    size_t eq = l.find('=');
    if (eq == std::string::npos) throw CLI::ValidationError("--label", "expected key=value");
    (*job.mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return job;
}

int CreateJob(ApiClient& api, const std::string& output, const v1::Job& job, bool follow) {
  v1::CreateJobRequest req;
  *req.mutable_job() = job;
  v1::Job created;
  if (int code = api.CreateJob(req, &created); code != 0) return code;
  Print(output, created, JobSummary(created), created.name());
  return follow ? WatchJob(api, output, created.name(), 0) : 0;
}

int GetJob(ApiClient& api, const std::string& output, const std::string& id) {
  v1::GetJobRequest req;
  req.set_name(Name("jobs", id));
  v1::Job job;
  if (int code = api.GetJob(req, &job); code != 0) return code;
  Print(output, job, JobSummary(job), job.name());
  return 0;
}

int ListJobs(ApiClient& api, const std::string& output, const JobFlags& f) {
  v1::ListJobsRequest req;
  req.set_page_size(1000);
  req.set_label(f.label);
  for (const auto& [text, field] :
       {std::pair{&f.created_after, req.mutable_create_time_after()},
        std::pair{&f.created_before, req.mutable_create_time_before()}}) {
    if (text->empty()) continue;
    if (!google::protobuf::util::TimeUtil::FromString(*text, field)) {
      std::fprintf(stderr, "tuneforge: '%s' is not a time like 2026-11-25T09:30:00Z\n",
                   text->c_str());
      return 2;
    }
  }
  if (f.created_after.empty()) req.clear_create_time_after();
  if (f.created_before.empty()) req.clear_create_time_before();
  if (!f.state.empty()) {
    v1::JobState st;
    if (!v1::JobState_Parse("JOB_STATE_" + f.state, &st)) {
      std::fprintf(stderr, "tuneforge: unknown state %s\n", f.state.c_str());
      return 2;
    }
    req.set_state(st);
  }
  v1::ListJobsResponse resp;
  if (int code = api.ListJobs(req, &resp); code != 0) return code;
  PrintList(output, resp, resp.jobs(), JobRow, kJobColumns);
  return 0;
}

// Cancel, pause or resume: `rpc` on the job, which is then printed.
template <typename Request>
int JobAction(ApiClient& api, const std::string& output, const std::string& id,
              int (ApiClient::*rpc)(const Request&, v1::Job*)) {
  Request req;
  req.set_name(Name("jobs", id));
  v1::Job job;
  if (int code = (api.*rpc)(req, &job); code != 0) return code;
  Print(output, job, JobSummary(job), job.name());
  return 0;
}

int ListCheckpoints(ApiClient& api, const std::string& output, const std::string& id) {
  v1::ListCheckpointsRequest req;
  req.set_name(Name("jobs", id));
  v1::ListCheckpointsResponse resp;
  if (int code = api.ListCheckpoints(req, &resp); code != 0) return code;
  if (output == "json" || output == "yaml") {
    std::cout << Structured(resp, output);
    return 0;
  }
  for (const v1::Checkpoint& c : resp.checkpoints()) {
    if (output == "name") {
      std::cout << c.name() << "\n";
      continue;
    }
    std::cout << c.name() << "  step " << c.step() << "  epoch " << c.epoch()
              << (c.best() ? "  best" : "")
              << (c.held() ? "  held: the job resumes here"
                           : c.uploaded() ? "  (no longer held)" : "  (on its worker only)")
              << "\n";
  }
  return 0;
}

// `jobs events`: the job's events so far (for pollers; `watch` follows them
// live).
int Events(ApiClient& api, const std::string& output, const std::string& id, int64_t after) {
  std::vector<v1::JobEvent> events;
  if (int code = api.ListAllJobEvents(Name("jobs", id), &events); code != 0) return code;
  v1::ListJobEventsResponse all;
  for (const v1::JobEvent& e : events) {
    if (e.sequence() > after) *all.add_events() = e;
  }
  if (output == "json" || output == "yaml") {
    std::cout << Structured(all, output);
  } else if (output == "text") {
    for (const v1::JobEvent& e : all.events()) std::cout << EventLine(e) << "\n";
  }
  return 0;
}

// `jobs metrics`: the metrics CSV's rows, from the events (so also while the
// job runs); a table for people, CSV with --csv, rows with -o json.
int Metrics(ApiClient& api, const std::string& output, const std::string& id, bool csv) {
  std::vector<v1::JobEvent> events;
  if (int code = api.ListAllJobEvents(Name("jobs", id), &events); code != 0) return code;
  const std::vector<MetricRow> rows = MetricRows(events);
  if (csv) {
    std::cout << MetricsCsv(rows);
  } else if (output == "json" || output == "yaml") {
    nlohmann::json list = nlohmann::json::array();
    for (const MetricRow& r : rows) {
      nlohmann::json j = {{"step", r.step()}, {"epoch", r.epoch()}};
      if (r.evaluation) {
        j.update({{"validation_loss", r.eval.validation_loss}, {"perplexity", r.eval.perplexity},
                  {"token_accuracy", r.eval.token_accuracy}});
      } else {
        j.update({{"train_loss", r.train.loss}, {"learning_rate", r.train.learning_rate},
                  {"grad_norm", r.train.grad_norm},
                  {"tokens_per_second", r.train.tokens_per_second}});
      }
      list.push_back(j);
    }
    std::cout << list.dump(2) << "\n";
  } else {
    std::cout << absl::StrFormat("%6s %5s %10s %10s %10s %10s %9s\n", "STEP", "EPOCH", "TRAIN",
                                 "VALID", "LR", "TOKENS/S", "ACCURACY");
    for (const MetricRow& r : rows) {
      std::cout << (r.evaluation
                        ? absl::StrFormat("%6d %5d %10s %10.4f %10s %10s %9.3f\n", r.step(),
                                          r.epoch(), "", r.eval.validation_loss, "", "",
                                          r.eval.token_accuracy)
                        : absl::StrFormat("%6d %5d %10.4f %10s %10.3g %10.0f %9s\n", r.step(),
                                          r.epoch(), r.train.loss, "", r.train.learning_rate,
                                          r.train.tokens_per_second, ""));
    }
  }
  return 0;
}

// `jobs plot`: train and validation loss against step, the learning rate on
// a second axis, as an SVG file.
int Plot(ApiClient& api, const std::string& output, const std::string& id,
         const std::string& out) {
  const std::string name = Name("jobs", id);
  std::vector<v1::JobEvent> events;
  if (int code = api.ListAllJobEvents(name, &events); code != 0) return code;
  const std::vector<MetricRow> rows = MetricRows(events);
  if (rows.empty()) {
    std::fprintf(stderr, "tuneforge: %s has reported no metrics yet\n", name.c_str());
    return 1;
  }
  std::ofstream file(out, std::ios::binary);
  file << LossPlotSvg(name + ": loss and learning rate", rows);
  if (!file.flush()) {
    std::fprintf(stderr, "tuneforge: cannot write %s\n", out.c_str());
    return 1;
  }
  if (output == "text") std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace

void AddJobCommands(CLI::App& app, Globals& g, int& code) {
  auto f = std::make_shared<JobFlags>();
  // A subcommand callback: fn(client, output format, flags), with a client of the server.
  auto run = [&g, &code, f](auto fn) {
    return RunWithClient(g, code, [&g, f, fn](ApiClient& api) { return fn(api, g.output, *f); });
  };

  CLI::App* jobs = app.add_subcommand("jobs", "create, follow and manage fine-tuning jobs");
  jobs->require_subcommand(1);
  CLI::App* create = jobs->add_subcommand("create", "create a fine-tuning job");
  create->add_option("--model", f->model,
                     "base model: a preset, models/ID, or jobs/ID (that job's result)")
      ->capture_default_str();
  create->add_option("--training-dataset", f->train, "datasets/ID")->required();
  create->add_option("--validation-dataset", f->validation, "datasets/ID");
  create->add_option("--validation-split", f->split, "fraction held out (default 0.1)");
  // --epochs, --learning-rate, ...: a flag per training setting; those not
  // given are left unset, for the server's defaults.
  f->setting_flags = AddSettingFlags(*create, f->settings);
  create->add_option("--lora-rank", f->lora_rank, "train LoRA adapters of this rank (e.g. 8)");
  create->add_option("--lora-alpha", f->lora_alpha, "default 16");
  create->add_option("--lora-dropout", f->lora_dropout, "default 0");
  create->add_option("--lora-targets", f->lora_targets,
                     "projections, e.g. q_proj,v_proj (default: the family's)")
      ->delimiter(',');
  create->add_option("--priority", f->priority, "higher runs first");
  create->add_option("--label", f->labels, "key=value, repeatable");
  create->add_option("--request-id", f->request_id, "idempotency key for retries");
  create->add_flag("--follow", f->follow, "watch the job until it ends");
  create->callback([&g, &code, f] {
    const v1::Job job = JobFromFlags(*f);  // a bad --label is a usage error, before any call
    code = WithClient(g, [&](ApiClient& api) { return CreateJob(api, g.output, job, f->follow); });
  });
  CLI::App* get = jobs->add_subcommand("get", "show a job's state and progress");
  get->add_option("ID", f->id)->required();
  get->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return GetJob(api, out, f.id);
  }));
  CLI::App* list = jobs->add_subcommand("list", "list jobs, newest first");
  list->add_option("--state", f->state, "QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, PAUSED");
  list->add_option("--label", f->label, "key=value");
  list->add_option("--created-after", f->created_after, "RFC 3339, e.g. 2026-11-25T09:30:00Z");
  list->add_option("--created-before", f->created_before, "RFC 3339");
  list->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return ListJobs(api, out, f);
  }));
  CLI::App* cancel = jobs->add_subcommand("cancel", "cancel a job");
  cancel->add_option("ID", f->id)->required();
  cancel->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return JobAction(api, out, f.id, &ApiClient::CancelJob);
  }));
  CLI::App* checkpoints = jobs->add_subcommand("checkpoints", "every checkpoint a job reported");
  checkpoints->add_option("ID", f->id)->required();
  checkpoints->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return ListCheckpoints(api, out, f.id);
  }));
  CLI::App* download = jobs->add_subcommand(
      "download", "download what a job produced, each file checked against its digest");
  download->add_option("ID", f->id)->required();
  download->add_option("--artifact", f->artifact, "model (the trained folder; also: merged), "
                                                  "adapter, metrics, manifest, tensorboard or all")
      ->transform(CLI::Transformer({{"merged", "model"}}))
      ->capture_default_str();
  download->add_option("-o,--dir", f->download_dir, "where to put the files")
      ->capture_default_str();
  download->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return DownloadArtifacts(api, out, Name("jobs", f.id), f.artifact, f.download_dir);
  }));
  CLI::App* pause = jobs->add_subcommand(
      "pause", "checkpoint a running job and free its worker; it waits PAUSED");
  pause->add_option("ID", f->id)->required();
  pause->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return JobAction(api, out, f.id, &ApiClient::PauseJob);
  }));
  CLI::App* resume = jobs->add_subcommand("resume", "queue a paused job again; it continues "
                                                    "from its checkpoint");
  resume->add_option("ID", f->id)->required();
  resume->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return JobAction(api, out, f.id, &ApiClient::ResumeJob);
  }));
  CLI::App* events = jobs->add_subcommand("events", "a job's events so far (watch follows them)");
  events->add_option("ID", f->id)->required();
  events->add_option("--after", f->after, "only events after this sequence number");
  events->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return Events(api, out, f.id, f.after);
  }));
  CLI::App* metrics = jobs->add_subcommand("metrics", "a job's training and validation metrics");
  metrics->add_option("ID", f->id)->required();
  metrics->add_flag("--csv", f->csv, "the metrics CSV's columns, for other tools");
  metrics->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return Metrics(api, out, f.id, f.csv);
  }));
  CLI::App* plot = jobs->add_subcommand(
      "plot", "draw train and validation loss (and the learning rate) as an SVG");
  plot->add_option("ID", f->id)->required();
  plot->add_option("-o,--out", f->plot_file, "the SVG file to write")->capture_default_str();
  plot->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return Plot(api, out, f.id, f.plot_file);
  }));
  CLI::App* watch = jobs->add_subcommand("watch", "stream a job's events until it ends");
  watch->add_option("ID", f->id)->required();
  watch->add_option("--after", f->after, "start after this event sequence number");
  watch->callback(run([](ApiClient& api, const std::string& out, const JobFlags& f) {
    return WatchJob(api, out, Name("jobs", f.id), f.after);
  }));
}

}  // namespace tuneforge::cli
