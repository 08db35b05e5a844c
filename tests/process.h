// Test helpers that run Tuneforge's real binaries: a scheduler with local
// workers on a free loopback port, and CLI invocations with their output and
// exit code.
#ifndef TUNEFORGE_TESTS_PROCESS_H_
#define TUNEFORGE_TESTS_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace tuneforge::testing {

// Directory of the built binaries (ctest sets TUNEFORGE_BIN_DIR).
std::string BinDir();

struct RunResult {
  int exit_code = -1;
  std::string out;  // standard output
  std::string err;  // standard error
};

// Runs `binary` (a name in BinDir(), or an absolute path) with `args` and waits for it, killing it
// after `timeout_s` (then exit_code is 137), so a hang fails a test instead
// of stalling it.
RunResult Run(const std::string& binary, const std::vector<std::string>& args,
              const std::vector<std::string>& env = {}, int timeout_s = 120);

// Runs `binary` until its standard output contains `marker`, then kills it
// with SIGKILL (no chance to clean up: a crash, an OOM kill, a lost node).
// exit_code is 137 when it was killed, else its own.
RunResult RunAndKill(const std::string& binary, const std::vector<std::string>& args,
                     const std::string& marker, int timeout_s = 120);

// A process left running (a worker, a watcher) until signalled; killed with
// SIGKILL when destroyed if it still runs.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::string& binary, const std::vector<std::string>& args,
                    const std::string& log_prefix);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  void Signal(int sig);
  // Waits up to timeout_s for it to exit; its exit code (128 + signal when
  // killed by one), or -1 if it still runs.
  int Wait(int timeout_s);
  std::string Out() const;  // standard output so far
  std::string Err() const;  // standard error so far

 private:
  pid_t pid_ = -1;
  std::string base_;
};

// A tuneforge-server process, stopped (SIGTERM) when destroyed.
class ServerProcess {
 public:
  // Starts the server with `--local-workers=workers` under `data_dir`
  // and waits until it serves: on a free port, or on the one a
  // "--listen=..." among extra_args names.
  ServerProcess(const std::string& data_dir, int workers,
                const std::vector<std::string>& extra_args = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  const std::string& addr() const { return addr_; }
  pid_t pid() const { return pid_; }
  // Runs the CLI against this server.
  RunResult Cli(const std::vector<std::string>& args) const;
  // SIGTERM, then waits; returns the exit status, or -1 when it did not
  // exit within timeout_s (it is then killed with SIGKILL).
  int Stop(int timeout_s = 60);
  // SIGKILL: the process dies on the spot, as in a crash.
  void Kill();
  void Signal(int sig);
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::string data_dir_;
  std::string addr_;
};

// A prompt/completion dataset of n HR questions a tiny model learns from,
// as a JSON array: "How many leave days in year 2000?" -> "In 2000 you get
// 20 days of leave.", ...
std::string LeaveDataset(int n);

// The rows of a metrics CSV (tuneforge-train --metrics-csv) by "step N"
// (train loss, learning rate, gradient norm) and "eval N" (validation loss,
// perplexity, token accuracy); tokens/s, a timing, is left out.
std::map<std::string, std::vector<double>> MetricRows(const std::string& csv);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeTcpPort();

// A fresh empty directory under the test temp dir.
std::string FreshDir(const std::string& name);
void WriteFile(const std::string& path, const std::string& content);
std::string ReadAll(const std::string& path);  // "" when it cannot be read

}  // namespace tuneforge::testing

#endif  // TUNEFORGE_TESTS_PROCESS_H_
