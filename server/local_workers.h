// Worker processes that the scheduler starts itself (--local-workers=N): the
// one-command local setup. Each child gets PR_SET_PDEATHSIG, so workers never
// outlive a scheduler that was killed.
//
// Not thread-safe: owned by main().
#ifndef TUNEFORGE_SERVER_LOCAL_WORKERS_H_
#define TUNEFORGE_SERVER_LOCAL_WORKERS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace tuneforge {

class LocalWorkers {
 public:
  ~LocalWorkers() { Stop(absl::Seconds(10)); }

  // Starts `binary` with `args` plus "--name=local-<i>", and `env`
  // ("NAME=value", taking precedence) added to the environment: secrets go
  // there, not on the command line where `ps` shows them.
  absl::Status Start(const std::string& binary, const std::vector<std::string>& args, int count,
                     const std::vector<std::string>& env = {});
  // SIGTERM to each, then SIGKILL to those still running after `grace`.
  void Stop(absl::Duration grace);

 private:
  std::vector<pid_t> pids_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_LOCAL_WORKERS_H_
