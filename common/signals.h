// Shutdown signals for the long-running binaries: SIGTERM and SIGINT are
// caught by a handler that writes them into a pipe, and taken in one place
// with WaitForTerminationSignal().
//
// A handler, not a blocked signal mask: libraries start threads before
// main() (OpenBLAS starts its pool when it loads), those threads never see a
// mask set in main(), and a signal delivered to one of them would kill the
// process with the default action. A handler is process-wide.
#ifndef TUNEFORGE_COMMON_SIGNALS_H_
#define TUNEFORGE_COMMON_SIGNALS_H_

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace tuneforge {

namespace signals_internal {
inline int pipe_fds[2] = {-1, -1};

inline void OnSignal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  (void)!write(pipe_fds[1], &byte, 1);  // async-signal-safe
  errno = saved;
}
}  // namespace signals_internal

// Call in main() before anything may send the signals. With `hangup`,
// SIGHUP is caught too (see WaitForTerminationSignal).
inline void CatchTerminationSignals(bool hangup = false) {
  using signals_internal::pipe_fds;
  if (pipe_fds[0] >= 0) return;
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return;
  struct sigaction action = {};
  action.sa_handler = signals_internal::OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  if (hangup) sigaction(SIGHUP, &action, nullptr);
}

// Blocks until SIGTERM or SIGINT arrives; returns it. Calls `on_hangup` for
// each SIGHUP in the meantime.
template <typename OnHangup>
int WaitForTerminationSignal(const OnHangup& on_hangup) {
  unsigned char byte = 0;
  while (true) {
    const ssize_t n = read(signals_internal::pipe_fds[0], &byte, 1);
    if (n == 1 && byte == SIGHUP) {
      on_hangup();
      continue;
    }
    if (n == 1) return byte;
    if (n < 0 && errno == EINTR) continue;
    return SIGTERM;  // the pipe is gone: treat it as a request to stop
  }
}
inline int WaitForTerminationSignal() {
  return WaitForTerminationSignal([] {});
}

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SIGNALS_H_
