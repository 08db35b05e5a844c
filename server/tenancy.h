// Tenants: whose datasets, models and jobs a caller may see, and how much a
// tenant may hold. Plain value types with no RPC or storage dependencies, so
// the catalogues and the scheduler can take them.
#ifndef TUNEFORGE_SERVER_TENANCY_H_
#define TUNEFORGE_SERVER_TENANCY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "server/records.h"
#include "server/store.h"

namespace tuneforge {

// The resources a caller may see and use: those of its own tenant, or every
// tenant's (admins). New resources always belong to `tenant`.
struct Scope {
  std::string tenant = kDefaultTenant;
  bool all_tenants = false;

  bool Sees(const std::string& owner) const { return all_tenants || owner == tenant; }
  // The tenant a listing is restricted to; "" for every tenant.
  std::string ListFilter() const { return all_tenants ? std::string() : tenant; }
};

// The priorities a job may have, and the band a tenant's users may use
// within them (admins may use them all). Users may lower their jobs'
// priority by default, to order their own work, but not raise it over
// other tenants' unless the tokens file grants a band that reaches higher.
inline constexpr int kMinPriority = -100;
inline constexpr int kMaxPriority = 100;
struct PriorityBand {
  int min = kMinPriority;
  int max = 0;
  bool operator==(const PriorityBand& o) const { return min == o.min && max == o.max; }
};

// What one tenant may hold at once; 0 means no limit.
struct Quota {
  int64_t stored_bytes = 0;  // datasets and models together, and uploads in progress
  int64_t datasets = 0;
  int64_t queued_jobs = 0;   // QUEUED and PAUSED
  int64_t running_jobs = 0;  // RUNNING: further jobs wait in the queue
  // Open upload and validation streams and resumable uploads awaiting a
  // resume, together.
  int64_t uploads = 0;
  PriorityBand priority;  // for users; admins are not bound by it
};
using QuotaFn = std::function<Quota(const std::string& tenant)>;

// How many bytes one more upload of `tenant` may hold: `limit` (the
// server's own) or what the tenant's storage quota leaves, if less. RESOURCE_EXHAUSTED when the quota is used up, or,
// for a `new_dataset`, when the tenant holds its quota of datasets.
struct Room {
  int64_t bytes = 0;
  std::string why;  // e.g. "tenant a's storage quota of 1000 bytes (900 in use)"
};
absl::StatusOr<Room> RoomFor(Store* store, const QuotaFn& quota, const std::string& tenant,
                             bool new_dataset, Room limit);
// The smaller of two rooms (`a` when they are equal), with what sets it.
inline const Room& Tighter(const Room& a, const Room& b) { return b.bytes < a.bytes ? b : a; }

// Each tenant's uploads in progress (dataset uploads and validations, model
// imports): how many are open, and the bytes they hold on disk before they
// are stored. Both are limited per tenant (the `uploads` quota, and the
// storage quota with stored and in-progress bytes together), so what one
// tenant leaves open never holds up another.
//
// Thread-safe.
class UploadLedger {
 public:
  explicit UploadLedger(QuotaFn quota) : quota_(std::move(quota)) {}
  // One more upload of `tenant`; RESOURCE_EXHAUSTED at its quota of uploads.
  absl::Status Open(const std::string& tenant);
  // `n` more bytes held; RESOURCE_EXHAUSTED when the tenant's uploads in
  // progress would hold more than `room` (what its storage quota leaves).
  absl::Status Hold(const std::string& tenant, int64_t n, const Room& room);
  // Gives back `uploads` uploads and `bytes` bytes.
  void Release(const std::string& tenant, int64_t uploads, int64_t bytes);

 private:
  struct Held {
    int64_t uploads = 0;
    int64_t bytes = 0;
  };
  const QuotaFn quota_;
  Mutex mu_;
  std::map<std::string, Held> held_ ABSL_GUARDED_BY(mu_);
};


}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_TENANCY_H_
