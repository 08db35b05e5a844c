#include "tests/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tuneforge::testing {
std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

pid_t Spawn(const std::string& path, const std::vector<std::string>& args,
            const std::vector<std::string>& env, const std::string& out, const std::string& err) {
  std::vector<std::string> argv = {path};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    for (const std::string& kv : env) putenv(strdup(kv.c_str()));
    std::vector<char*> c;
    for (std::string& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    execv(path.c_str(), c.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

std::string BinDir() {
  const char* dir = std::getenv("TUNEFORGE_BIN_DIR");
  return dir ? dir : "build/bin";
}

std::map<std::string, std::vector<double>> MetricRows(const std::string& csv) {
  std::map<std::string, std::vector<double>> rows;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream cell(line);
    for (std::string c; std::getline(cell, c, ',');) cells.push_back(c);
    cells.resize(9);
    const bool eval = cells[2].empty();
    std::vector<double> values;
    for (int i : eval ? std::vector<int>{6, 7, 8} : std::vector<int>{2, 3, 4}) {
      values.push_back(std::stod(cells[i]));
    }
    rows[(eval ? "eval " : "step ") + cells[0]] = values;
  }
  return rows;
}

int FreeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/tf-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string LeaveDataset(int n) {
  nlohmann::json records = nlohmann::json::array();
  for (int i = 0; i < n; ++i) {
    records.push_back({{"prompt", "How many leave days in year " + std::to_string(2000 + i) + "?"},
                       {"completion", "In " + std::to_string(2000 + i) + " you get " +
                                          std::to_string(20 + i % 7) + " days of leave."}});
  }
  return records.dump(2);
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

namespace {

// Runs `binary` and waits for it to exit, or kills it (SIGKILL) once its
// standard output holds `kill_marker` (when not empty), or after timeout_s.
RunResult RunWatching(const std::string& binary, const std::vector<std::string>& args,
                      const std::vector<std::string>& env, int timeout_s,
                      const std::string& kill_marker) {
  static int counter = 0;
  std::string base = ::testing::TempDir() + "/run-" + std::to_string(getpid()) + "-" +
                     std::to_string(counter++);
  const std::string path = binary[0] == '/' ? binary : BinDir() + "/" + binary;
  pid_t pid = Spawn(path, args, env, base + ".out", base + ".err");
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    const bool marked =
        !kill_marker.empty() && ReadAll(base + ".out").find(kill_marker) != std::string::npos;
    const bool late = std::chrono::steady_clock::now() > deadline;
    if (marked || late) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      if (late && kill_marker.empty()) {
        ADD_FAILURE() << binary << " ran longer than " << timeout_s << " s and was killed";
      } else if (late) {
        ADD_FAILURE() << binary << " never printed \"" << kill_marker << "\"";
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadAll(base + ".out");
  r.err = ReadAll(base + ".err");
  std::filesystem::remove(base + ".out");
  std::filesystem::remove(base + ".err");
  return r;
}

}  // namespace

RunResult Run(const std::string& binary, const std::vector<std::string>& args,
              const std::vector<std::string>& env, int timeout_s) {
  return RunWatching(binary, args, env, timeout_s, "");
}

RunResult RunAndKill(const std::string& binary, const std::vector<std::string>& args,
                     const std::string& marker, int timeout_s) {
  return RunWatching(binary, args, {}, timeout_s, marker);
}

BackgroundProcess::BackgroundProcess(const std::string& binary,
                                     const std::vector<std::string>& args,
                                     const std::string& log_prefix)
    : base_(log_prefix) {
  pid_ = Spawn(BinDir() + "/" + binary, args, {}, base_ + ".out", base_ + ".err");
}

BackgroundProcess::~BackgroundProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void BackgroundProcess::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

int BackgroundProcess::Wait(int timeout_s) {
  if (pid_ < 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string BackgroundProcess::Out() const { return ReadAll(base_ + ".out"); }
std::string BackgroundProcess::Err() const { return ReadAll(base_ + ".err"); }

ServerProcess::ServerProcess(const std::string& data_dir, int workers,
                             const std::vector<std::string>& extra_args)
    : data_dir_(data_dir) {
  std::filesystem::remove(data_dir + "/port");
  std::vector<std::string> args = {"--port-file=" + data_dir + "/port",
                                   "--data-dir=" + data_dir + "/data",
                                   "--local-workers=" + std::to_string(workers)};
  bool listen = false;
  for (const std::string& a : extra_args) listen = listen || a.rfind("--listen=", 0) == 0;
  if (!listen) args.push_back("--listen=127.0.0.1:0");
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = Spawn(BinDir() + "/tuneforge-server", args, {}, data_dir + "/server.out",
               data_dir + "/server.log");
  for (int i = 0; i < 200; ++i) {
    std::string port = ReadAll(data_dir + "/port");
    if (!port.empty() && port.back() == '\n') {
      addr_ = "127.0.0.1:" + port.substr(0, port.size() - 1);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("tuneforge-server did not start: " + Log());
}

ServerProcess::~ServerProcess() { Stop(); }

int ServerProcess::Stop(int timeout_s) {
  if (pid_ < 0) return 0;
  kill(pid_, SIGTERM);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {  // wedged: a test fails, none hangs
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void ServerProcess::Kill() {
  if (pid_ < 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void ServerProcess::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

std::string ServerProcess::Log() const { return ReadAll(data_dir_ + "/server.log"); }

RunResult ServerProcess::Cli(const std::vector<std::string>& args) const {
  std::vector<std::string> full = {"--addr=" + addr_};
  full.insert(full.end(), args.begin(), args.end());
  return Run("tuneforge", full);
}

}  // namespace tuneforge::testing
