// The newest events of each active job, and the watchers waiting for them.
// The scheduler appends a job's events once they are committed; watchers
// subscribe to a job and are told, on a notifier thread of the hub's own
// (never on the thread that committed), that it has new events, which they
// then read at their own pace (Recent(), else the store). So a slow watcher
// holds up neither training nor other watchers, and following a job live
// reads no disk however many watch it.
//
// Thread-safe. Listeners run without the hub's locks held, may call any
// method, and may run once for several events that came together.
#ifndef TUNEFORGE_SERVER_EVENT_HUB_H_
#define TUNEFORGE_SERVER_EVENT_HUB_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "server/records.h"

namespace tuneforge {

class EventHub {
 public:
  using Listener = std::function<void()>;

  EventHub();   // starts the notifier thread
  ~EventHub();  // stops it; no listener runs after it returns

  // Keeps `events` (the job's next ones, in sequence order) among the job's
  // newest and wakes the job's listeners.
  void Append(const std::string& job_id, std::vector<Event> events);
  // The job's events after `after_sequence`, at most `limit`, when the newest
  // kept cover them; nullopt when they do not (read the store).
  std::optional<std::vector<Event>> Recent(const std::string& job_id, int64_t after_sequence,
                                           int limit) const;
  // Drops the events kept for an ended job.
  void Forget(const std::string& job_id);

  uint64_t Subscribe(const std::string& job_id, Listener listener);
  void Unsubscribe(uint64_t id);

 private:
  void NotifierLoop();

  static constexpr size_t kRecentEvents = 1024;  // per job
  mutable Mutex mu_;
  std::map<std::string, std::deque<Event>> recent_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::pair<std::string, Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Jobs with events their listeners have not yet been told of.
  std::mutex notify_mu_;
  std::condition_variable notify_cv_;
  std::set<std::string> to_notify_;  // guarded by notify_mu_
  bool stopping_ = false;            // guarded by notify_mu_
  std::thread notifier_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_EVENT_HUB_H_
