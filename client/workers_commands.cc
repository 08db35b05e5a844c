// `tuneforge workers list`: the workers that have registered, and what each
// is doing.
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/format.h"
#include "client/output.h"

namespace tuneforge::cli {
namespace {

int ListWorkers(ApiClient& api, const std::string& output) {
  v1::ListWorkersResponse resp;
  if (int code = api.ListWorkers(v1::ListWorkersRequest(), &resp); code != 0) return code;
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
  Print(output, resp, table, names);
  return 0;
}

}  // namespace

void AddWorkerCommands(CLI::App& app, Globals& g, int& code) {
  CLI::App* workers = app.add_subcommand("workers", "the workers that run jobs");
  workers->require_subcommand(1);
  workers->add_subcommand("list", "each worker's device, state, job and tokens/s")
      ->callback(RunWithClient(g, code,
                               [&g](ApiClient& api) { return ListWorkers(api, g.output); }));
}

}  // namespace tuneforge::cli
