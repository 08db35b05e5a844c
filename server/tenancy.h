// Tenants: whose datasets, models and jobs a caller may see, and how much a
// tenant may hold. Plain value types with no RPC or storage dependencies, so
// the catalogues and the scheduler can take them.
#ifndef TUNEFORGE_SERVER_TENANCY_H_
#define TUNEFORGE_SERVER_TENANCY_H_

#include <cstdint>
#include <functional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// What one tenant may hold at once; 0 means no limit.
struct Quota {
  int64_t stored_bytes = 0;  // datasets and models together
  int64_t datasets = 0;
  int64_t queued_jobs = 0;   // QUEUED and PAUSED
  int64_t running_jobs = 0;  // RUNNING: further jobs wait in the queue
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

// The error for a resource that does not exist or belongs to another tenant:
// the same words either way, so ids cannot be probed.
inline absl::Status NotFound(absl::string_view kind, absl::string_view id) {
  return absl::NotFoundError(absl::StrCat(kind, " ", id, " not found"));
}

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_TENANCY_H_
