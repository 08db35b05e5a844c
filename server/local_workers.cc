#include "server/local_workers.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tuneforge {

absl::Status LocalWorkers::Start(const std::string& binary, const std::vector<std::string>& args,
                                 int count, const std::vector<std::string>& env) {
  if (::access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("worker binary ", binary, " is not executable: ",
                                            std::strerror(errno), "; set --worker-binary"));
  }
  const pid_t parent = ::getpid();
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> argv = {binary};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(absl::StrCat("--name=local-", i));
    std::vector<char*> c_argv;
    for (std::string& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    // Built before fork(): the child of a threaded process may only exec.
    std::vector<std::string> environment = env;
    for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
    std::vector<char*> c_env;
    for (std::string& e : environment) c_env.push_back(e.data());
    c_env.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the server blocks signals for sigwait
      ::execve(binary.c_str(), c_argv.data(), c_env.data());
      ::_exit(127);
    }
    pids_.push_back(pid);
  }
  return absl::OkStatus();
}

void LocalWorkers::Stop(absl::Duration grace) {
  for (pid_t pid : pids_) ::kill(pid, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  for (pid_t pid : pids_) {
    while (true) {
      pid_t r = ::waitpid(pid, nullptr, WNOHANG);
      if (r == pid || (r < 0 && errno != EINTR)) break;
      if (absl::Now() >= deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  pids_.clear();
}

}  // namespace tuneforge
