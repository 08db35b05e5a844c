// tuneforge: the command-line client.
//
//   tuneforge datasets upload examples/hr.json
//   tuneforge jobs create --model tiny-gpt2 --training-dataset datasets/ID --follow
//   tuneforge jobs watch jobs/ID
//
// Exit codes: 0 success; 1 the job failed or was cancelled (watch, create
// --follow), the dataset is invalid, or another error; 2 usage error or an
// invalid argument; 3 server unavailable; 4 not found.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/format.h"
#include "client/plot.h"
#include "common/channel.h"
#include "common/dataset_validator.h"
#include "common/report_proto.h"
#include "common/settings_flags.h"
#include "common/settings_proto.h"
#include "common/sha256.h"
#include "common/model_config.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/model.grpc.pb.h"

namespace tuneforge::cli {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(30);
constexpr size_t kChunkBytes = 1 << 20;

struct UploadOptions {
  std::string model;      // count tokens with this model's tokenizer
  std::string upload_id;  // "": the first 32 hex digits of the file's sha256
  std::string format;     // "" (detect), prompt_completion, chat, text
  std::string separator;  // plain text documents
  int max_seq_len = 0;    // report examples longer than this
};

// .txt and .md files are plain text unless a format is given.
v1::DatasetFormat FormatFor(const std::string& path, const std::string& format) {
  if (format == "prompt_completion") return v1::DATASET_FORMAT_PROMPT_COMPLETION;
  if (format == "chat") return v1::DATASET_FORMAT_CHAT;
  if (format == "text") return v1::DATASET_FORMAT_TEXT;
  for (const char* ext : {".txt", ".md"}) {
    const std::string e = ext;
    if (path.size() > e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0) {
      return v1::DATASET_FORMAT_TEXT;
    }
  }
  return v1::DATASET_FORMAT_UNSPECIFIED;
}

std::string FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Sha256 hash;
  std::string buffer(kChunkBytes, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash.Update(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())));
  }
  return hash.HexDigest();
}

// A one-line progress bar on standard error, drawn only on a terminal.
class Progress {
 public:
  Progress(const char* what, int64_t total)
      : what_(what), total_(total), on_(isatty(2) && std::getenv("NO_COLOR") == nullptr),
        start_(std::chrono::steady_clock::now()) {}
  void Update(int64_t done) {
    if (!on_ || total_ <= 0) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 30;
    const int filled = static_cast<int>(width * done / total_);
    std::fprintf(stderr, "\r%s [%s%s] %3d%%  %.1f MB/s", what_,
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<int>(100 * done / total_), s > 0 ? done / s / 1e6 : 0.0);
  }
  void Done() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  const char* what_;
  int64_t total_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

// `datasets validate` without a server: the scheduler's checks, run here.
int ValidateLocally(const std::string& path, const UploadOptions& o, const std::string& output) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "tuneforge: cannot read %s\n", path.c_str());
    return 2;
  }
  if (!o.model.empty()) {
    std::string model = o.model.substr(o.model.rfind('/') + 1);
    if (FindPreset(model) == nullptr) {
      std::fprintf(stderr, "tuneforge: unknown model %s; local validation knows the presets:",
                   o.model.c_str());
      for (const Preset& p : Presets()) std::fprintf(stderr, " %s", p.name.c_str());
      std::fprintf(stderr, "\n");
      return 2;
    }
  }
  ValidatorOptions options;  // the presets tokenise bytes, as the validator counts
  options.declared = FromProto(FormatFor(path, o.format));
  options.separator = o.separator;
  options.max_seq_len = o.max_seq_len;
  options.keep_examples = false;
  DatasetValidator validator(options);
  std::string buffer(kChunkBytes, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    validator.Feed(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())));
  }
  v1::ValidationReport report = ToProto(validator.Finish().report);
  if (output == "json" || output == "yaml") {
    std::cout << Structured(report, output);
  } else {
    std::cout << path << (report.error_count() > 0 ? "  INVALID\n" : "  OK\n")
              << ReportSummary(report) << ReportProblems(report);
  }
  return report.error_count() > 0 ? 1 : 0;
}

// What an upload or a remote validation announces about a file.
v1::UploadDatasetMetadata MetadataFor(const std::string& path, const std::string& name,
                                      int64_t size, const UploadOptions& o) {
  v1::UploadDatasetMetadata m;
  m.set_display_name(name.empty() ? path.substr(path.find_last_of('/') + 1) : name);
  m.set_format(FormatFor(path, o.format));
  m.set_size_bytes(size);
  m.set_separator(o.separator);
  m.set_max_seq_len(o.max_seq_len);
  if (!o.model.empty()) m.set_model("models/" + o.model.substr(o.model.rfind('/') + 1));
  return m;
}

struct Globals {
  ChannelOptions channel;       // address, token, TLS
  std::string output = "text";  // text | json | yaml | name
};

// Columns of the terminal standard output is, or 0 (no limit) when piped.
int TerminalWidth() {
  winsize ws{};
  return isatty(1) && ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 0;
}

int ExitCode(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK: return 0;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 3;
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return 4;
    case grpc::StatusCode::INVALID_ARGUMENT: return 2;
    default: return 1;
  }
}

int Fail(const grpc::Status& s) {
  std::fprintf(stderr, "tuneforge: %s: %s\n",
               s.error_code() == grpc::StatusCode::UNAVAILABLE ? "server unavailable" : "error",
               s.error_message().c_str());
  return ExitCode(s);
}

std::unique_ptr<grpc::ClientContext> Context(std::chrono::seconds timeout = kCallTimeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

// Accepts "jobs/ID" or a bare "ID".
std::string Name(const std::string& collection, const std::string& id) {
  return id.rfind(collection + "/", 0) == 0 ? id : collection + "/" + id;
}

class Client {
 public:
  Client(const Globals& g, std::shared_ptr<grpc::Channel> channel)
      : g_(g),
        channel_(std::move(channel)),
        datasets_(v1::DatasetService::NewStub(channel_)),
        jobs_(v1::JobService::NewStub(channel_)),
        models_(v1::ModelService::NewStub(channel_)) {}

  // Prints `m` as text, JSON, or (-o name) just its resource name, for scripts.
  template <typename M>
  void Print(const M& m, const std::string& text, const std::string& name = "") {
    if (g_.output == "json" || g_.output == "yaml") {
      std::cout << Structured(m, g_.output);
    } else if (g_.output == "name") {
      if (!name.empty()) std::cout << name << "\n";
    } else {
      std::cout << text;
    }
    std::cout << std::flush;
  }

  // Streams a file up, resumably: the upload is named by --upload-id or by
  // the file's digest, so after a dropped connection (retried here) or a
  // killed CLI (run the same command again) only the missing bytes are sent.
  int UploadDataset(const std::string& path, const std::string& name, const UploadOptions& o) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) {
      std::fprintf(stderr, "tuneforge: cannot read %s\n", path.c_str());
      return 2;
    }
    const int64_t size = in.tellg();
    v1::UploadDatasetMetadata m = MetadataFor(path, name, size, o);
    m.set_sha256(FileSha256(path));
    m.set_upload_id(o.upload_id.empty() ? m.sha256().substr(0, 32) : o.upload_id);

    grpc::Status s;
    v1::Dataset dataset;
    for (int attempt = 0; attempt < 6; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::seconds(attempt));
      int64_t offset = 0;
      v1::QueryUploadRequest query;
      query.set_upload_id(m.upload_id());
      v1::QueryUploadResponse pending;
      if (datasets_->QueryUpload(Context().get(), query, &pending).ok() &&
          pending.size_bytes() == size && pending.committed_size() > 0) {
        offset = pending.committed_size();
        std::fprintf(stderr, "tuneforge: resuming upload %s at byte %lld of %lld\n",
                     m.upload_id().c_str(), static_cast<long long>(offset),
                     static_cast<long long>(size));
      }
      m.set_offset(offset);
      s = SendFrom(in, m, &dataset);
      const bool dropped = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           (s.error_code() == grpc::StatusCode::CANCELLED &&
                            s.error_message().find("resume") != std::string::npos);
      if (!dropped) break;
      std::fprintf(stderr, "tuneforge: upload interrupted (%s); retrying\n",
                   s.error_message().c_str());
    }
    if (!s.ok()) return Fail(s);
    Print(dataset, DatasetSummary(dataset) + ReportProblems(dataset.report()), dataset.name());
    return dataset.state() == v1::DATASET_STATE_READY ? 0 : 1;
  }

  // Prints a page of resources: their summaries, or (-o name) their names.
  template <typename Response, typename Items, typename Summary>
  void PrintList(const Response& resp, const Items& items, Summary row,
                 const std::vector<std::string>& columns) {
    std::vector<std::vector<std::string>> rows;
    std::string names;
    for (const auto& item : items) {
      rows.push_back(row(item));
      names += (names.empty() ? "" : "\n") + item.name();
    }
    Print(resp, Table(columns, rows, TerminalWidth()), names);
  }

  // `datasets validate --remote`: the server's ValidateDataset, storing nothing.
  int ValidateRemotely(const std::string& path, const UploadOptions& o) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) {
      std::fprintf(stderr, "tuneforge: cannot read %s\n", path.c_str());
      return 2;
    }
    v1::UploadDatasetMetadata m = MetadataFor(path, "", in.tellg(), o);
    auto ctx = Context(std::chrono::seconds(600 + m.size_bytes() / (1 << 20)));
    v1::ValidateDatasetResponse resp;
    auto writer = datasets_->ValidateDataset(ctx.get(), &resp);
    grpc::Status s = Stream(writer.get(), in, m);
    if (!s.ok()) return Fail(s);
    const v1::ValidationReport& report = resp.report();
    Print(resp, path + (report.error_count() > 0 ? "  INVALID\n" : "  OK\n") +
                    ReportSummary(report) + ReportProblems(report));
    return report.error_count() > 0 ? 1 : 0;
  }

  // One UploadDataset stream: metadata, then the file from metadata.offset.
  grpc::Status SendFrom(std::ifstream& in, const v1::UploadDatasetMetadata& m,
                        v1::Dataset* dataset) {
    auto ctx = Context(std::chrono::seconds(600 + m.size_bytes() / (1 << 20)));  // >= 1 MiB/s
    auto writer = datasets_->UploadDataset(ctx.get(), dataset);
    return Stream(writer.get(), in, m);
  }

  // Writes metadata, then the file from metadata.offset, and ends the stream.
  grpc::Status Stream(grpc::ClientWriter<v1::UploadDatasetRequest>* writer, std::ifstream& in,
                      const v1::UploadDatasetMetadata& m) {
    v1::UploadDatasetRequest req;
    *req.mutable_metadata() = m;
    bool ok = writer->Write(req);
    in.clear();
    in.seekg(m.offset());
    Progress progress("uploading", m.size_bytes());
    std::string buffer(kChunkBytes, '\0');
    int64_t sent = m.offset();
    while (ok && in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      v1::UploadDatasetRequest chunk;
      chunk.set_chunk(buffer.substr(0, n));
      ok = writer->Write(chunk);
      sent += static_cast<int64_t>(n);
      progress.Update(sent);
    }
    progress.Done();
    writer->WritesDone();
    return writer->Finish();
  }

  int GetDataset(const std::string& id) {
    v1::GetDatasetRequest req;
    req.set_name(Name("datasets", id));
    v1::Dataset d;
    grpc::Status s = datasets_->GetDataset(Context().get(), req, &d);
    if (!s.ok()) return Fail(s);
    Print(d, DatasetSummary(d) + ReportProblems(d.report()), d.name());
    return 0;
  }

  int ListDatasets() {
    v1::ListDatasetsRequest req;
    req.set_page_size(1000);
    v1::ListDatasetsResponse resp;
    grpc::Status s = datasets_->ListDatasets(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s);
    PrintList(resp, resp.datasets(), DatasetRow, kDatasetColumns);
    return 0;
  }

  // Every event of a job so far, a page at a time.
  grpc::Status AllEvents(const std::string& name, std::vector<v1::JobEvent>* events) {
    v1::ListJobEventsRequest req;
    req.set_name(name);
    req.set_page_size(1000);
    while (true) {
      v1::ListJobEventsResponse resp;
      grpc::Status s = jobs_->ListJobEvents(Context().get(), req, &resp);
      if (!s.ok()) return s;
      events->insert(events->end(), resp.events().begin(), resp.events().end());
      if (resp.next_page_token().empty()) return grpc::Status::OK;
      req.set_page_token(resp.next_page_token());
    }
  }

  // `jobs events`: the job's events so far, a page at a time (for pollers;
  // `watch` follows them live).
  int Events(const std::string& id, int64_t after) {
    std::vector<v1::JobEvent> events;
    grpc::Status s = AllEvents(Name("jobs", id), &events);
    if (!s.ok()) return Fail(s);
    v1::ListJobEventsResponse all;
    for (const v1::JobEvent& e : events) {
      if (e.sequence() > after) *all.add_events() = e;
    }
    if (g_.output == "json" || g_.output == "yaml") {
      std::cout << Structured(all, g_.output);
    } else if (g_.output == "text") {
      for (const v1::JobEvent& e : all.events()) std::cout << EventLine(e) << "\n";
    }
    return 0;
  }

  // `jobs metrics`: the metrics CSV's rows, from the events (so also while
  // the job runs); a table for people, CSV with --csv, rows with -o json.
  int Metrics(const std::string& id, bool csv) {
    std::vector<v1::JobEvent> events;
    grpc::Status s = AllEvents(Name("jobs", id), &events);
    if (!s.ok()) return Fail(s);
    const std::vector<MetricRow> rows = MetricRows(events);
    if (csv) {
      std::cout << MetricsCsv(rows);
    } else if (g_.output == "json" || g_.output == "yaml") {
      nlohmann::json list = nlohmann::json::array();
      for (const MetricRow& r : rows) {
        nlohmann::json j = {{"step", r.step}, {"epoch", r.epoch}};
        if (r.evaluation) {
          j.update({{"validation_loss", r.validation_loss}, {"perplexity", r.perplexity},
                    {"token_accuracy", r.token_accuracy}});
        } else {
          j.update({{"train_loss", r.train_loss}, {"learning_rate", r.learning_rate},
                    {"grad_norm", r.grad_norm}, {"tokens_per_second", r.tokens_per_second}});
        }
        list.push_back(j);
      }
      std::cout << list.dump(2) << "\n";
    } else {
      std::cout << absl::StrFormat("%6s %5s %10s %10s %10s %10s %9s\n", "STEP", "EPOCH",
                                   "TRAIN", "VALID", "LR", "TOKENS/S", "ACCURACY");
      for (const MetricRow& r : rows) {
        std::cout << (r.evaluation
                          ? absl::StrFormat("%6d %5d %10s %10.4f %10s %10s %9.3f\n", r.step,
                                            r.epoch, "", r.validation_loss, "", "",
                                            r.token_accuracy)
                          : absl::StrFormat("%6d %5d %10.4f %10s %10.3g %10.0f %9s\n", r.step,
                                            r.epoch, r.train_loss, "", r.learning_rate,
                                            r.tokens_per_second, ""));
      }
    }
    return 0;
  }

  // `jobs plot`: train and validation loss against step, the learning rate
  // on a second axis, as an SVG file.
  int Plot(const std::string& id, const std::string& out) {
    std::vector<v1::JobEvent> events;
    grpc::Status s = AllEvents(Name("jobs", id), &events);
    if (!s.ok()) return Fail(s);
    const std::vector<MetricRow> rows = MetricRows(events);
    if (rows.empty()) {
      std::fprintf(stderr, "tuneforge: %s has reported no metrics yet\n", Name("jobs", id).c_str());
      return 1;
    }
    std::ofstream file(out, std::ios::binary);
    file << LossPlotSvg(Name("jobs", id) + ": loss and learning rate", rows);
    if (!file.flush()) {
      std::fprintf(stderr, "tuneforge: cannot write %s\n", out.c_str());
      return 1;
    }
    if (g_.output == "text") std::cout << "wrote " << out << "\n";
    return 0;
  }

  int ListWorkers() {
    v1::ListWorkersResponse resp;
    grpc::Status s = jobs_->ListWorkers(Context().get(), v1::ListWorkersRequest(), &resp);
    if (!s.ok()) return Fail(s);
    std::vector<std::vector<std::string>> rows;
    for (const v1::Worker& w : resp.workers()) {
      rows.push_back({w.name(), w.display_name(), w.device(), w.state(),
                      w.job().empty() ? "-" : w.job(),
                      w.job().empty() ? "-" : absl::StrFormat("%.0f", w.tokens_per_second())});
    }
    std::string table =
        rows.empty() ? "no workers have registered\n"
                     : Table({"WORKER", "NAME", "DEVICE", "STATE", "JOB", "TOKENS/S"}, rows,
                             TerminalWidth());
    std::string names;
    for (const v1::Worker& w : resp.workers()) names += (names.empty() ? "" : "\n") + w.name();
    Print(resp, table, names);
    return 0;
  }

  int DeleteDataset(const std::string& id) {
    v1::DeleteDatasetRequest req;
    req.set_name(Name("datasets", id));
    v1::DeleteDatasetResponse resp;
    grpc::Status s = datasets_->DeleteDataset(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s);
    if (g_.output == "text") std::cout << "deleted " << req.name() << "\n";
    return 0;
  }

  int ListModels() {
    v1::ListModelsRequest req;
    req.set_page_size(1000);
    v1::ListModelsResponse resp;
    grpc::Status s = models_->ListModels(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s);
    PrintList(resp, resp.models(), ModelRow, kModelColumns);
    return 0;
  }

  int GetModel(const std::string& id) {
    v1::GetModelRequest req;
    req.set_name(Name("models", id));
    v1::Model m;
    grpc::Status s = models_->GetModel(Context().get(), req, &m);
    if (!s.ok()) return Fail(s);
    Print(m, ModelSummary(m), m.name());
    return 0;
  }

  int DeleteModel(const std::string& id) {
    v1::DeleteModelRequest req;
    req.set_name(Name("models", id));
    v1::DeleteModelResponse resp;
    grpc::Status s = models_->DeleteModel(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s);
    if (g_.output == "text") std::cout << "deleted " << req.name() << "\n";
    return 0;
  }

  // Streams a Hugging Face model folder: the files the server stores
  // (config, weights, tokenizer); others (README.md, *.bin) are skipped.
  int ImportModel(const std::string& dir, const std::string& display_name) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      if (!e.is_regular_file()) continue;
      const std::string file = e.path().filename().string();
      if (IsModelFileName(file)) {
        files.push_back(e.path());
      } else if (file[0] != '.') {
        std::fprintf(stderr, "tuneforge: skipping %s (not a model file)\n", file.c_str());
      }
    }
    if (ec) {
      std::fprintf(stderr, "tuneforge: cannot read %s: %s\n", dir.c_str(), ec.message().c_str());
      return 2;
    }
    std::sort(files.begin(), files.end());
    auto ctx = Context(std::chrono::hours(24));
    v1::Model model;
    auto writer = models_->ImportModel(ctx.get(), &model);
    v1::ImportModelRequest req;
    std::string folder = fs::path(dir).lexically_normal().filename().string();
    if (folder.empty()) folder = fs::path(dir).lexically_normal().parent_path().filename().string();
    req.mutable_metadata()->set_display_name(display_name.empty() ? folder : display_name);
    bool ok = writer->Write(req);
    std::vector<char> buffer(kChunkBytes);
    for (const fs::path& path : files) {
      if (!ok) break;
      v1::ImportModelRequest::FileHeader* h = req.mutable_file();
      h->set_path(path.filename().string());
      h->set_size_bytes(static_cast<int64_t>(fs::file_size(path, ec)));
      h->set_sha256(FileSha256(path.string()));
      ok = writer->Write(req);
      std::ifstream in(path, std::ios::binary);
      while (ok && in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        if (in.gcount() == 0) break;
        req.set_chunk(buffer.data(), static_cast<size_t>(in.gcount()));
        ok = writer->Write(req);
      }
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) return Fail(s);
    Print(model, ModelSummary(model), model.name());
    return 0;
  }

  int CreateJob(const v1::Job& job, bool follow) {
    v1::CreateJobRequest req;
    *req.mutable_job() = job;
    v1::Job created;
    grpc::Status s = jobs_->CreateJob(Context().get(), req, &created);
    if (!s.ok()) return Fail(s);
    Print(created, JobSummary(created), created.name());
    return follow ? Watch(created.name(), 0) : 0;
  }

  int GetJob(const std::string& id) {
    v1::GetJobRequest req;
    req.set_name(Name("jobs", id));
    v1::Job job;
    grpc::Status s = jobs_->GetJob(Context().get(), req, &job);
    if (!s.ok()) return Fail(s);
    Print(job, JobSummary(job), job.name());
    return 0;
  }

  int ListCheckpoints(const std::string& id) {
    v1::ListCheckpointsRequest req;
    req.set_name(Name("jobs", id));
    v1::ListCheckpointsResponse resp;
    grpc::Status s = jobs_->ListCheckpoints(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s);
    if (g_.output == "json" || g_.output == "yaml") {
      std::cout << Structured(resp, g_.output);
      return 0;
    }
    for (const v1::Checkpoint& c : resp.checkpoints()) {
      if (g_.output == "name") {
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

  // Downloads the job's artifacts of one kind ("model", "adapter", "metrics",
  // "manifest", or "all") into `dir`, each checked against its digest and
  // moved into place only then.
  int Download(const std::string& id, const std::string& which, const std::string& dir) {
    v1::GetJobRequest get;
    get.set_name(Name("jobs", id));
    v1::Job job;
    grpc::Status s = jobs_->GetJob(Context().get(), get, &job);
    if (!s.ok()) return Fail(s);
    const std::map<std::string, std::string> prefixes = {
        {"model", "model/"}, {"adapter", "adapter/"}, {"metrics", "metrics.csv"},
        {"manifest", "manifest.json"}, {"tensorboard", "tensorboard/"}, {"all", ""}};
    auto prefix = prefixes.find(which);
    if (prefix == prefixes.end()) {
      std::fprintf(stderr, "tuneforge: --artifact is model, adapter, metrics, manifest or all\n");
      return 2;
    }
    std::vector<const v1::Artifact*> files;
    int64_t total = 0;
    for (const v1::Artifact& a : job.artifacts()) {
      if (a.path().rfind(prefix->second, 0) != 0) continue;
      files.push_back(&a);
      total += a.size_bytes();
    }
    if (files.empty()) {
      std::fprintf(stderr, "tuneforge: %s has no %s artifacts (it is %s)\n", job.name().c_str(),
                   which.c_str(), StateName(job.state()).c_str());
      return 4;
    }
    Progress progress("downloading", total);
    int64_t done = 0;
    std::vector<std::string> written;
    for (const v1::Artifact* a : files) {
      // Names come from the server: never let one leave `dir`.
      const std::filesystem::path relative(a->path());
      if (relative.empty() || relative.is_absolute() ||
          std::any_of(relative.begin(), relative.end(), [](const auto& p) { return p == ".."; })) {
        std::fprintf(stderr, "tuneforge: the server named an artifact '%s'; not written\n",
                     a->path().c_str());
        return 1;
      }
      // A group's files land in `dir` itself; "all" keeps their folders.
      const std::string local =
          dir + "/" + (which == "all" || prefix->second.back() != '/'
                           ? a->path()
                           : a->path().substr(prefix->second.size()));
      std::filesystem::create_directories(std::filesystem::path(local).parent_path());
      const std::string tmp = local + ".part";
      v1::DownloadArtifactRequest req;
      req.set_name(job.name());
      req.set_artifact(a->path());
      auto ctx = Context(std::chrono::hours(2));
      auto reader = jobs_->DownloadArtifact(ctx.get(), req);
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      Sha256 hash;
      v1::ArtifactChunk chunk;
      while (reader->Read(&chunk)) {
        out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
        hash.Update(chunk.data());
        progress.Update(done += static_cast<int64_t>(chunk.data().size()));
      }
      out.close();
      s = reader->Finish();
      if (!s.ok() || !out || hash.HexDigest() != a->sha256()) {
        std::filesystem::remove(tmp);
        progress.Done();
        if (!s.ok()) return Fail(s);
        std::fprintf(stderr, "tuneforge: %s: %s\n", a->path().c_str(),
                     out ? "the bytes do not match the artifact's digest" : "cannot write it");
        return 1;
      }
      std::filesystem::rename(tmp, local);
      written.push_back(local);
    }
    progress.Done();
    if (g_.output == "json") {
      std::cout << nlohmann::json(written).dump(2) << "\n";
    } else if (g_.output == "yaml") {
      for (const std::string& w : written) std::cout << "- " << nlohmann::json(w).dump() << "\n";
    } else {
      for (const std::string& w : written) std::cout << w << "\n";
    }
    return 0;
  }

  int ListJobs(const std::string& state, const std::string& label, const std::string& after,
               const std::string& before) {
    v1::ListJobsRequest req;
    req.set_page_size(1000);
    req.set_label(label);
    for (const auto& [text, field] : {std::pair{&after, req.mutable_create_time_after()},
                                      std::pair{&before, req.mutable_create_time_before()}}) {
      if (text->empty()) continue;
      if (!google::protobuf::util::TimeUtil::FromString(*text, field)) {
        std::fprintf(stderr, "tuneforge: '%s' is not a time like 2026-11-25T09:30:00Z\n",
                     text->c_str());
        return 2;
      }
    }
    if (after.empty()) req.clear_create_time_after();
    if (before.empty()) req.clear_create_time_before();
    if (!state.empty()) {
      v1::JobState st;
      if (!v1::JobState_Parse("JOB_STATE_" + state, &st)) {
        std::fprintf(stderr, "tuneforge: unknown state %s\n", state.c_str());
        return 2;
      }
      req.set_state(st);
    }
    v1::ListJobsResponse resp;
    grpc::Status s = jobs_->ListJobs(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s);
    PrintList(resp, resp.jobs(), JobRow, kJobColumns);
    return 0;
  }

  // Cancel, pause or resume: `rpc` on the job, which is then printed.
  template <typename Request>
  int JobAction(const std::string& id,
                grpc::Status (v1::JobService::Stub::*rpc)(grpc::ClientContext*, const Request&,
                                                          v1::Job*)) {
    Request req;
    req.set_name(Name("jobs", id));
    v1::Job job;
    grpc::Status s = (jobs_.get()->*rpc)(Context().get(), req, &job);
    if (!s.ok()) return Fail(s);
    Print(job, JobSummary(job), job.name());
    return 0;
  }

  // Prints every event until the job ends; reconnects after a dropped stream
  // from the last sequence seen, so nothing is lost or repeated.
  int Watch(const std::string& id, int64_t after) {
    const std::string name = Name("jobs", id);
    // On a terminal (and without NO_COLOR) a view redrawn in place; piped,
    // one line per event.
    const bool live = g_.output == "text" && isatty(1) && std::getenv("NO_COLOR") == nullptr;
    LiveState view;
    view.job = name;
    size_t drawn = 0;  // lines of the last frame, to move back over
    auto redraw = [&] {
      const int columns = TerminalWidth();
      const int width = columns > 20 ? columns : 80;
      std::string out;
      if (drawn > 0) out += absl::StrCat("\x1b[", drawn, "F");  // to the frame's first line
      const std::vector<std::string> frame = LiveFrame(view, width);
      for (const std::string& line : frame) out += "\x1b[2K" + line + "\n";
      for (size_t i = frame.size(); i < drawn; ++i) out += "\x1b[2K\n";  // a shorter frame
      drawn = std::max(drawn, frame.size());
      std::cout << out << std::flush;
    };
    int retries = 0;
    while (true) {
      auto ctx = Context(std::chrono::hours(24 * 7));
      v1::WatchJobRequest req;
      req.set_name(name);
      req.set_after_sequence(after);
      auto reader = jobs_->WatchJob(ctx.get(), req);
      v1::JobEvent event;
      while (reader->Read(&event)) {
        retries = 0;
        after = event.sequence();
        if (g_.output == "json") {
          std::cout << ToJson(event) << "\n" << std::flush;
        } else if (g_.output == "yaml") {  // a stream of YAML documents
          std::cout << "---\n" << ToYaml(event) << std::flush;
        } else if (live) {
          view.Apply(event);
          redraw();
        } else {
          std::cout << EventLine(event) << "\n" << std::flush;
        }
      }
      grpc::Status s = reader->Finish();
      if (s.ok()) break;
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || ++retries > 30) return Fail(s);
      std::fprintf(stderr, "tuneforge: stream dropped (%s); reconnecting after #%lld\n",
                   s.error_message().c_str(), static_cast<long long>(after));
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    v1::GetJobRequest req;
    req.set_name(name);
    v1::Job job;
    grpc::Status s = jobs_->GetJob(Context().get(), req, &job);
    if (!s.ok()) return Fail(s);
    if (g_.output == "text") std::cout << JobSummary(job) << std::flush;
    return job.state() == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
  }

 private:
  const Globals& g_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::ModelService::Stub> models_;
};

}  // namespace

namespace {

// Every subcommand path ("t", "t_jobs", "t_jobs_watch": keys that need no
// quoting in bash or zsh) with the words that may follow it: its
// subcommands and its options.
void CompletionWords(const CLI::App* app, const std::string& path,
                     std::vector<std::pair<std::string, std::string>>* out) {
  std::string words;
  for (const CLI::App* sub : app->get_subcommands({})) {
    absl::StrAppend(&words, words.empty() ? "" : " ", sub->get_name());
  }
  for (const CLI::Option* opt : app->get_options()) {
    for (const std::string& name : opt->get_lnames()) absl::StrAppend(&words, " --", name);
    for (const std::string& name : opt->get_snames()) absl::StrAppend(&words, " -", name);
  }
  out->emplace_back(path, words);
  for (const CLI::App* sub : app->get_subcommands({})) {
    CompletionWords(sub, path + "_" + sub->get_name(), out);
  }
}

// A bash completion function generated from the CLI's own definition, so it
// never drifts; zsh runs it through bashcompinit.
std::string CompletionScript(const CLI::App& app, const std::string& shell) {
  std::vector<std::pair<std::string, std::string>> table;
  CompletionWords(&app, "t", &table);
  std::string out = "# tuneforge completion (" + shell + "), generated by tuneforge itself\n";
  if (shell == "zsh") {
    out += "(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }\n"
           "autoload -U +X bashcompinit && bashcompinit\n";
  }
  out += "_tuneforge() {\n  local -A words\n";
  for (const auto& [path, words] : table) {
    absl::StrAppend(&out, "  words[", path, "]=\"", words, "\"\n");
  }
  out +=
      "  local path=t i w cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=\"${COMP_WORDS[i]}\"\n"
      "    [[ -n \"${words[${path}_$w]+x}\" ]] && path=\"${path}_$w\"\n"
      "  done\n"
      "  COMPREPLY=($(compgen -W \"${words[$path]}\" -- \"$cur\"))\n"
      "}\n"
      "complete -o default -F _tuneforge tuneforge\n";
  return out;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"tuneforge: fine-tune LLMs on a Tuneforge server"};
  app.require_subcommand(1);
  Globals g;
  app.add_option("--addr", g.channel.address, "server address")
      ->envname("TUNEFORGE_ADDR")
      ->capture_default_str();
  AddChannelOptions(app, &g.channel);
  // Flags first, then TUNEFORGE_ADDR, TUNEFORGE_TOKEN and TUNEFORGE_CA, then
  // a config file (addr = "...", token = "...", ca-file = "...", ...). CLI11's
  // own config files would beat the environment, so the file is read here,
  // once flags and environment are in, for the options still unset.
  const char* home = std::getenv("HOME");
  std::string config =
      home != nullptr ? std::string(home) + "/.config/tuneforge/config.toml" : std::string();
  app.add_option("--config", config, "defaults for the options above (TOML: name = value)")
      ->capture_default_str();
  app.parse_complete_callback([&] {
    std::ifstream in(config);
    if (!in) return;  // no file: nothing to default
    int line_number = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_number;
      line = line.substr(0, line.find('#'));
      const size_t eq = line.find('=');
      if (eq == std::string::npos) {
        if (absl::StripAsciiWhitespace(line).empty()) continue;
        throw CLI::ValidationError(absl::StrCat(config, " line ", line_number),
                                   "expected name = value");
      }
      const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
      std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      CLI::Option* opt = app.get_option_no_throw("--" + key);
      if (opt == nullptr || key == "config") {
        throw CLI::ValidationError(absl::StrCat(config, " line ", line_number),
                                   "no option --" + key);
      }
      if (opt->count() > 0) continue;  // a flag or the environment said otherwise
      opt->add_result(value);
      opt->run_callback();
    }
  });
  app.add_option("-o,--output", g.output,
                 "text (or table), json, yaml, or name (resource names only)")
      ->transform(CLI::Transformer({{"table", "text"}}))
      ->check(CLI::IsMember({"text", "json", "yaml", "name"}))
      ->capture_default_str();
  int code = 0;
  // Runs `fn` with a client of the server; options that make no channel
  // (a missing CA file) are usage errors.
  auto with_client = [&](auto fn) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(g.channel);
    if (!channel.ok()) {
      std::fprintf(stderr, "tuneforge: %s\n", std::string(channel.status().message()).c_str());
      return 2;
    }
    return fn(Client(g, *std::move(channel)));
  };
  auto run = [&](auto fn) { return [&, fn] { code = with_client(fn); }; };

  CLI::App* datasets = app.add_subcommand("datasets", "upload and inspect datasets");
  datasets->require_subcommand(1);
  std::string file, name, id;
  UploadOptions upload_options;
  auto dataset_options = [&](CLI::App* cmd) {
    cmd->add_option("FILE", file,
                    "a JSON array or JSONL of prompt/completion, chat or text records, or a "
                    "plain text file")
        ->required();
    cmd->add_option("--format", upload_options.format,
                    "prompt_completion, chat or text (default: detect; .txt and .md are text)")
        ->check(CLI::IsMember({"prompt_completion", "chat", "text"}));
    cmd->add_option("--separator", upload_options.separator,
                    "plain text: split documents on this string (default: one document)");
    cmd->add_option("--max-seq-len", upload_options.max_seq_len,
                    "report how many examples are longer than this many tokens");
    cmd->add_option("--model", upload_options.model,
                    "count tokens with this base model's tokenizer (default: bytes)");
  };
  CLI::App* upload = datasets->add_subcommand("upload", "upload a dataset file");
  dataset_options(upload);
  upload->add_option("--name", name, "display name (default: the file name)");
  upload->add_option("--upload-id", upload_options.upload_id,
                     "names the upload for resuming (default: from the file's digest)");
  upload->callback(run([&](Client c) { return c.UploadDataset(file, name, upload_options); }));
  CLI::App* validate = datasets->add_subcommand(
      "validate", "check a local file as the server would, without a server; exit 1 on errors");
  dataset_options(validate);
  bool remote = false;
  validate->add_flag("--remote", remote, "validate on the server (ValidateDataset) instead");
  validate->callback([&] {
    code = remote ? with_client([&](Client c) { return c.ValidateRemotely(file, upload_options); })
                  : ValidateLocally(file, upload_options, g.output);
  });
  CLI::App* dget = datasets->add_subcommand("get", "show a dataset and its report");
  dget->add_option("ID", id)->required();
  dget->callback(run([&](Client c) { return c.GetDataset(id); }));
  CLI::App* ddelete = datasets->add_subcommand("delete", "delete a dataset no job still uses");
  ddelete->add_option("ID", id)->required();
  ddelete->callback(run([&](Client c) { return c.DeleteDataset(id); }));
  datasets->add_subcommand("list", "list datasets")
      ->callback(run([&](Client c) { return c.ListDatasets(); }));

  CLI::App* workers = app.add_subcommand("workers", "the workers that run jobs");
  workers->require_subcommand(1);
  workers->add_subcommand("list", "each worker's device, state, job and tokens/s")
      ->callback(run([&](Client c) { return c.ListWorkers(); }));

  CLI::App* models = app.add_subcommand("models", "import, list and delete base models");
  models->require_subcommand(1);
  models->add_subcommand("list", "list models: presets, imported, fine-tuned")
      ->callback(run([&](Client c) { return c.ListModels(); }));
  CLI::App* mimport = models->add_subcommand(
      "import", "import a Hugging Face model folder (config.json, *.safetensors, tokenizer)");
  std::string model_dir;
  mimport->add_option("DIR", model_dir)->required()->check(CLI::ExistingDirectory);
  mimport->add_option("--display-name", name, "default: the folder's name");
  mimport->callback(run([&](Client c) { return c.ImportModel(model_dir, name); }));
  CLI::App* mget = models->add_subcommand("get", "show a model");
  mget->add_option("NAME", id)->required();
  mget->callback(run([&](Client c) { return c.GetModel(id); }));
  CLI::App* mdelete = models->add_subcommand("delete", "delete a model no job still uses");
  mdelete->add_option("NAME", id)->required();
  mdelete->callback(run([&](Client c) { return c.DeleteModel(id); }));

  CLI::App* jobs = app.add_subcommand("jobs", "create, follow and manage fine-tuning jobs");
  jobs->require_subcommand(1);
  CLI::App* create = jobs->add_subcommand("create", "create a fine-tuning job");
  std::string model = "tiny-gpt2", train, validation, request_id;
  double split = -1;
  int priority = 0, lora_rank = 0;
  double lora_alpha = 0, lora_dropout = 0;
  std::vector<std::string> lora_targets;
  std::vector<std::string> labels;
  bool follow = false;
  create->add_option("--model", model,
                     "base model: a preset, models/ID, or jobs/ID (that job's result)")
      ->capture_default_str();
  create->add_option("--training-dataset", train, "datasets/ID")->required();
  create->add_option("--validation-dataset", validation, "datasets/ID");
  create->add_option("--validation-split", split, "fraction held out (default 0.1)");
  // --epochs, --learning-rate, ...: a flag per training setting; those not
  // given are left unset, for the server's defaults.
  TrainingSettings settings;
  const std::vector<SettingFlag> setting_flags = AddSettingFlags(*create, settings);
  create->add_option("--lora-rank", lora_rank, "train LoRA adapters of this rank (e.g. 8)");
  create->add_option("--lora-alpha", lora_alpha, "default 16");
  create->add_option("--lora-dropout", lora_dropout, "default 0");
  create->add_option("--lora-targets", lora_targets,
                     "projections, e.g. q_proj,v_proj (default: the family's)")
      ->delimiter(',');
  create->add_option("--priority", priority, "higher runs first");
  create->add_option("--label", labels, "key=value, repeatable");
  create->add_option("--request-id", request_id, "idempotency key for retries");
  create->add_flag("--follow", follow, "watch the job until it ends");
  create->callback([&] {
    v1::Job job;
    job.set_base_model(model.rfind("jobs/", 0) == 0 ? model : Name("models", model));
    job.set_training_dataset(Name("datasets", train));
    if (!validation.empty()) job.set_validation_dataset(Name("datasets", validation));
    if (split >= 0) job.set_validation_split(split);
    std::vector<std::string> given;
    for (const SettingFlag& f : setting_flags) {
      if (f.Given()) given.emplace_back(f.info->name);
    }
    SettingsToProto(settings, job.mutable_hyperparameters(), &given);
    if (lora_rank > 0) {
      job.set_method(v1::TRAINING_METHOD_LORA);
      job.mutable_lora()->set_rank(lora_rank);
      job.mutable_lora()->set_alpha(lora_alpha);
      job.mutable_lora()->set_dropout(lora_dropout);
      for (const std::string& t : lora_targets) job.mutable_lora()->add_target_modules(t);
    }
    job.set_priority(priority);
    job.set_request_id(request_id);
    for (const std::string& l : labels) {
      size_t eq = l.find('=');
      if (eq == std::string::npos) throw CLI::ValidationError("--label", "expected key=value");
      (*job.mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
    }
    code = with_client([&](Client c) { return c.CreateJob(job, follow); });
  });
  std::string state, label;
  int64_t after = 0;
  CLI::App* jget = jobs->add_subcommand("get", "show a job's state and progress");
  jget->add_option("ID", id)->required();
  jget->callback(run([&](Client c) { return c.GetJob(id); }));
  CLI::App* jlist = jobs->add_subcommand("list", "list jobs, newest first");
  jlist->add_option("--state", state, "QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, PAUSED");
  jlist->add_option("--label", label, "key=value");
  std::string created_after, created_before;
  jlist->add_option("--created-after", created_after, "RFC 3339, e.g. 2026-11-25T09:30:00Z");
  jlist->add_option("--created-before", created_before, "RFC 3339");
  jlist->callback(
      run([&](Client c) { return c.ListJobs(state, label, created_after, created_before); }));
  CLI::App* cancel = jobs->add_subcommand("cancel", "cancel a job");
  cancel->add_option("ID", id)->required();
  cancel->callback(run([&](Client c) { return c.JobAction(id, &v1::JobService::Stub::CancelJob); }));
  CLI::App* checkpoints = jobs->add_subcommand("checkpoints", "every checkpoint a job reported");
  checkpoints->add_option("ID", id)->required();
  checkpoints->callback(run([&](Client c) { return c.ListCheckpoints(id); }));
  std::string artifact = "model", download_dir = ".";
  CLI::App* download = jobs->add_subcommand(
      "download", "download what a job produced, each file checked against its digest");
  download->add_option("ID", id)->required();
  download->add_option("--artifact", artifact, "model (the trained folder; also: merged), "
                                               "adapter, metrics, manifest, tensorboard or all")
      ->transform(CLI::Transformer({{"merged", "model"}}))
      ->capture_default_str();
  download->add_option("-o,--dir", download_dir, "where to put the files")->capture_default_str();
  download->callback(run([&](Client c) { return c.Download(id, artifact, download_dir); }));
  CLI::App* pause = jobs->add_subcommand(
      "pause", "checkpoint a running job and free its worker; it waits PAUSED");
  pause->add_option("ID", id)->required();
  pause->callback(run([&](Client c) { return c.JobAction(id, &v1::JobService::Stub::PauseJob); }));
  CLI::App* resume = jobs->add_subcommand("resume", "queue a paused job again; it continues "
                                                    "from its checkpoint");
  resume->add_option("ID", id)->required();
  resume->callback(run([&](Client c) { return c.JobAction(id, &v1::JobService::Stub::ResumeJob); }));
  CLI::App* events = jobs->add_subcommand("events", "a job's events so far (watch follows them)");
  events->add_option("ID", id)->required();
  events->add_option("--after", after, "only events after this sequence number");
  events->callback(run([&](Client c) { return c.Events(id, after); }));
  bool csv = false;
  CLI::App* metrics = jobs->add_subcommand("metrics", "a job's training and validation metrics");
  metrics->add_option("ID", id)->required();
  metrics->add_flag("--csv", csv, "the metrics CSV's columns, for other tools");
  metrics->callback(run([&](Client c) { return c.Metrics(id, csv); }));
  std::string plot_file = "loss.svg";
  CLI::App* plot = jobs->add_subcommand(
      "plot", "draw train and validation loss (and the learning rate) as an SVG");
  plot->add_option("ID", id)->required();
  plot->add_option("-o,--out", plot_file, "the SVG file to write")->capture_default_str();
  plot->callback(run([&](Client c) { return c.Plot(id, plot_file); }));
  CLI::App* watch = jobs->add_subcommand("watch", "stream a job's events until it ends");
  watch->add_option("ID", id)->required();
  watch->add_option("--after", after, "start after this event sequence number");
  watch->callback(run([&](Client c) { return c.Watch(id, after); }));

  std::string shell;
  CLI::App* completion = app.add_subcommand(
      "completion", "print a completion script: source <(tuneforge completion bash)");
  completion->add_option("SHELL", shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember({"bash", "zsh"}));
  completion->callback([&] {
    std::cout << CompletionScript(app, shell);
    code = 0;
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return code;
}

}  // namespace tuneforge::cli

int main(int argc, char** argv) { return tuneforge::cli::Main(argc, argv); }
