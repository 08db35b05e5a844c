// Shutdown signals for the long-running binaries: block SIGTERM and SIGINT in
// every thread, then take them in one place with WaitForTerminationSignal().
#ifndef TUNEFORGE_COMMON_SIGNALS_H_
#define TUNEFORGE_COMMON_SIGNALS_H_

#include <pthread.h>
#include <signal.h>

namespace tuneforge {

// Call in main() before any thread starts, so every thread inherits the mask.
inline void BlockTerminationSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

// Blocks until SIGTERM or SIGINT arrives; returns it.
inline int WaitForTerminationSignal() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int sig = 0;
  sigwait(&signals, &sig);
  return sig;
}

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SIGNALS_H_
