// The CLI's command groups: the options every command shares (Globals), and
// one function per group that adds its subcommands to the app. Each
// subcommand's callback sets `code`, the process's exit code.
#ifndef TUNEFORGE_CLIENT_COMMANDS_H_
#define TUNEFORGE_CLIENT_COMMANDS_H_

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "client/api_client.h"
#include "common/channel.h"

namespace tuneforge::cli {

struct Globals {
  ChannelOptions channel;       // address, token, TLS
  std::string output = "text";  // text | json | yaml | name
};

// `datasets`, `workers`, `models` and `jobs`. `g` and `code` must outlive
// the parse; what the options parse into is owned by the callbacks.
void AddDatasetCommands(CLI::App& app, Globals& g, int& code);
void AddWorkerCommands(CLI::App& app, Globals& g, int& code);
void AddModelCommands(CLI::App& app, Globals& g, int& code);
void AddJobCommands(CLI::App& app, Globals& g, int& code);

// Accepts "jobs/ID" or a bare "ID".
std::string Name(const std::string& collection, const std::string& id);

// Runs `fn` with a client of the server; options that make no channel (a
// missing CA file) are usage errors (2).
int WithClient(const Globals& g, const std::function<int(ApiClient&)>& fn);
// A subcommand callback: `code` = WithClient(g, fn), once the flags (and so
// g) are parsed.
std::function<void()> RunWithClient(const Globals& g, int& code,
                                    std::function<int(ApiClient&)> fn);

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_COMMANDS_H_
