// `tuneforge datasets ...`: upload, validate (here or on the server), get,
// delete and list datasets.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "client/commands.h"
#include "client/format.h"
#include "client/output.h"
#include "client/transfer.h"
#include "common/dataset_validator.h"
#include "common/model_config.h"
#include "common/report_proto.h"

namespace tuneforge::cli {
namespace {

// What the datasets subcommands parse into; the callbacks keep it alive.
struct DatasetFlags {
  std::string file, name, id;
  UploadOptions upload;
  bool remote = false;
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

int GetDataset(ApiClient& api, const std::string& output, const std::string& id) {
  v1::GetDatasetRequest req;
  req.set_name(Name("datasets", id));
  v1::Dataset d;
  if (int code = api.GetDataset(req, &d); code != 0) return code;
  Print(output, d, DatasetSummary(d) + ReportProblems(d.report()), d.name());
  return 0;
}

int DeleteDataset(ApiClient& api, const std::string& output, const std::string& id) {
  v1::DeleteDatasetRequest req;
  req.set_name(Name("datasets", id));
  v1::DeleteDatasetResponse resp;
  if (int code = api.DeleteDataset(req, &resp); code != 0) return code;
  if (output == "text") std::cout << "deleted " << req.name() << "\n";
  return 0;
}

int ListDatasets(ApiClient& api, const std::string& output) {
  v1::ListDatasetsRequest req;
  req.set_page_size(1000);
  v1::ListDatasetsResponse resp;
  if (int code = api.ListDatasets(req, &resp); code != 0) return code;
  PrintList(output, resp, resp.datasets(), DatasetRow, kDatasetColumns);
  return 0;
}

}  // namespace

void AddDatasetCommands(CLI::App& app, Globals& g, int& code) {
  auto f = std::make_shared<DatasetFlags>();
  CLI::App* datasets = app.add_subcommand("datasets", "upload and inspect datasets");
  datasets->require_subcommand(1);
  // upload and validate read a file the same way.
  auto dataset_options = [&](CLI::App* cmd) {
    cmd->add_option("FILE", f->file,
                    "a JSON array or JSONL of prompt/completion, chat or text records, or a "
                    "plain text file")
        ->required();
    cmd->add_option("--format", f->upload.format,
                    "prompt_completion, chat or text (default: detect; .txt and .md are text)")
        ->check(CLI::IsMember({"prompt_completion", "chat", "text"}));
    cmd->add_option("--separator", f->upload.separator,
                    "plain text: split documents on this string (default: one document)");
    cmd->add_option("--max-seq-len", f->upload.max_seq_len,
                    "report how many examples are longer than this many tokens");
    cmd->add_option("--model", f->upload.model,
                    "count tokens with this base model's tokenizer (default: bytes)");
  };
  CLI::App* upload = datasets->add_subcommand("upload", "upload a dataset file");
  dataset_options(upload);
  upload->add_option("--name", f->name, "display name (default: the file name)");
  upload->add_option("--upload-id", f->upload.upload_id,
                     "names the upload for resuming (default: from the file's digest)");
  upload->callback(RunWithClient(g, code, [&g, f](ApiClient& api) {
    return UploadDataset(api, g.output, f->file, f->name, f->upload);
  }));
  CLI::App* validate = datasets->add_subcommand(
      "validate", "check a local file as the server would, without a server; exit 1 on errors");
  dataset_options(validate);
  validate->add_flag("--remote", f->remote, "validate on the server (ValidateDataset) instead");
  validate->callback([&g, &code, f] {
    code = f->remote ? WithClient(g,
                                  [&](ApiClient& api) {
                                    return ValidateRemotely(api, g.output, f->file, f->upload);
                                  })
                     : ValidateLocally(f->file, f->upload, g.output);
  });
  CLI::App* get = datasets->add_subcommand("get", "show a dataset and its report");
  get->add_option("ID", f->id)->required();
  get->callback(RunWithClient(
      g, code, [&g, f](ApiClient& api) { return GetDataset(api, g.output, f->id); }));
  CLI::App* del = datasets->add_subcommand("delete", "delete a dataset no job still uses");
  del->add_option("ID", f->id)->required();
  del->callback(RunWithClient(
      g, code, [&g, f](ApiClient& api) { return DeleteDataset(api, g.output, f->id); }));
  datasets->add_subcommand("list", "list datasets")
      ->callback(RunWithClient(g, code,
                               [&g](ApiClient& api) { return ListDatasets(api, g.output); }));
}

}  // namespace tuneforge::cli
