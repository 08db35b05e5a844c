#include "server/blob_reclaimer.h"

#include <spdlog/spdlog.h>

namespace tuneforge {

BlobReclaimer::BlobReclaimer(Store* store, BlobStore* blobs)
    : store_(store), blobs_(blobs), thread_([this] { Loop(); }) {}

BlobReclaimer::~BlobReclaimer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void BlobReclaimer::Release(std::vector<std::string> digests) {
  if (digests.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::string& d : digests) queue_.push_back(std::move(d));
    queued_ += digests.size();
  }
  cv_.notify_all();
}

void BlobReclaimer::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = queued_;
  cv_.wait(lock, [&] { return handled_ >= target; });
}

int64_t BlobReclaimer::removed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return removed_;
}

void BlobReclaimer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to remove
    std::string sha256 = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Reclaim(sha256);
    lock.lock();
    ++handled_;
    cv_.notify_all();
  }
}

absl::StatusOr<bool> RemoveIfUnreferenced(Store* store, BlobStore* blobs,
                                          const std::string& sha256) {
  absl::StatusOr<int64_t> users = store->CountBlobReferences(sha256);
  if (!users.ok()) return users.status();
  if (*users > 0 || !blobs->Contains(sha256)) return false;
  if (absl::Status s = blobs->Remove(sha256); !s.ok()) return s;
  return true;
}

void BlobReclaimer::Reclaim(const std::string& sha256) {
  MutexLock refs(&store_->blob_refs_mu());
  absl::StatusOr<bool> removed = RemoveIfUnreferenced(store_, blobs_, sha256);
  if (!removed.ok()) {
    spdlog::warn("blob {} kept for now: {}", sha256, removed.status().ToString());
    return;
  }
  if (!*removed) return;
  std::lock_guard<std::mutex> lock(mu_);
  ++removed_;
}

}  // namespace tuneforge
