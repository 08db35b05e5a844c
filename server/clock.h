// Where the scheduler core reads the time. The server runs on the system
// clock; tests run on a ManualClock they advance, so that leases expire,
// workers stall and long polls end without the test sleeping.
//
//   ManualClock clock;
//   options.clock = &clock;
//   ...
//   clock.Advance(absl::Seconds(31));  // past the lease
//   scheduler->ReapExpired();
//
// Thread-safe.
#ifndef TUNEFORGE_SERVER_CLOCK_H_
#define TUNEFORGE_SERVER_CLOCK_H_

#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace tuneforge {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  int64_t NowMs() const { return absl::ToUnixMillis(Now()); }

  // The system's clock; lives as long as the process.
  static const Clock& System();
};

class SystemClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

inline const Clock& Clock::System() {
  static const SystemClock* clock = new SystemClock();
  return *clock;
}

// Milliseconds since the epoch on the system's clock.
inline int64_t NowMs() { return Clock::System().NowMs(); }

// A clock that moves only when told to.
class ManualClock : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::FromUnixSeconds(1'800'000'000)) : now_(start) {}
  absl::Time Now() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_CLOCK_H_
