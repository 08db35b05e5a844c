#include "server/event_hub.h"

#include <algorithm>

namespace tuneforge {

EventHub::EventHub() : notifier_([this] { NotifierLoop(); }) {}

EventHub::~EventHub() {
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    stopping_ = true;
  }
  notify_cv_.notify_all();
  notifier_.join();
}

void EventHub::Append(const std::string& job_id, std::vector<Event> events) {
  if (events.empty()) return;
  {
    MutexLock lock(&mu_);
    std::deque<Event>& recent = recent_[job_id];
    for (Event& e : events) recent.push_back(std::move(e));
    while (recent.size() > kRecentEvents) recent.pop_front();
  }
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    to_notify_.insert(job_id);
  }
  notify_cv_.notify_one();
}

std::optional<std::vector<Event>> EventHub::Recent(const std::string& job_id,
                                                   int64_t after_sequence, int limit) const {
  MutexLock lock(&mu_);
  auto it = recent_.find(job_id);
  if (it == recent_.end() || it->second.empty() ||
      after_sequence < it->second.front().sequence - 1) {
    return std::nullopt;
  }
  // Sequence numbers are consecutive, so the first one wanted is found by
  // arithmetic: a watcher that is up to date costs nothing.
  const std::deque<Event>& recent = it->second;
  const auto first = static_cast<size_t>(std::min<int64_t>(
      after_sequence - recent.front().sequence + 1, static_cast<int64_t>(recent.size())));
  const size_t end = std::min(recent.size(), first + static_cast<size_t>(std::max(limit, 0)));
  return std::vector<Event>(recent.begin() + first, recent.begin() + end);
}

void EventHub::Forget(const std::string& job_id) {
  MutexLock lock(&mu_);
  recent_.erase(job_id);
}

uint64_t EventHub::Subscribe(const std::string& job_id, Listener listener) {
  MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  listeners_[id] = {job_id, std::move(listener)};
  return id;
}

void EventHub::Unsubscribe(uint64_t id) {
  MutexLock lock(&mu_);
  listeners_.erase(id);
}

void EventHub::NotifierLoop() {
  std::unique_lock<std::mutex> lock(notify_mu_);
  while (true) {
    notify_cv_.wait(lock, [this] { return stopping_ || !to_notify_.empty(); });
    if (stopping_) return;
    std::set<std::string> jobs;
    jobs.swap(to_notify_);
    lock.unlock();
    std::vector<Listener> calls;
    {
      MutexLock state(&mu_);
      for (const auto& [id, entry] : listeners_) {
        if (jobs.count(entry.first) > 0) calls.push_back(entry.second);
      }
    }
    for (const Listener& call : calls) call();
    lock.lock();
  }
}

}  // namespace tuneforge
