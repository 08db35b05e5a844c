#include "server/tenancy.h"

#include "common/status_macros.h"

namespace tuneforge {

absl::StatusOr<Room> RoomFor(Store* store, const QuotaFn& quota, const std::string& tenant,
                             bool new_dataset, Room limit) {
  Room room = std::move(limit);
  const Quota q = quota ? quota(tenant) : Quota{};
  if (q.stored_bytes <= 0 && (q.datasets <= 0 || !new_dataset)) return room;
  ASSIGN_OR_RETURN(TenantUsage usage, store->Usage(tenant));
  if (new_dataset && q.datasets > 0 && usage.datasets >= q.datasets) {
    return absl::ResourceExhaustedError(absl::StrCat("tenant ", tenant, " holds ", usage.datasets,
                                                     " datasets, its quota is ", q.datasets,
                                                     "; delete some first"));
  }
  if (q.stored_bytes <= 0) return room;
  const std::string why = absl::StrCat("tenant ", tenant, "'s storage quota of ", q.stored_bytes,
                                       " bytes (", usage.stored_bytes, " in use)");
  if (usage.stored_bytes >= q.stored_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(why, " is used up; delete something first"));
  }
  if (q.stored_bytes - usage.stored_bytes < room.bytes) {
    room.bytes = q.stored_bytes - usage.stored_bytes;
    room.why = why;
  }
  return room;
}

absl::Status UploadLedger::Open(const std::string& tenant) {
  const int64_t limit = quota_ ? quota_(tenant).uploads : 0;
  MutexLock lock(&mu_);
  Held& held = held_[tenant];
  if (limit > 0 && held.uploads >= limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant ", tenant, " has ", held.uploads, " uploads in progress (open streams and "
        "resumable uploads awaiting a resume), its quota; finish or abandon some (an idle "
        "resumable upload is dropped after an hour)"));
  }
  ++held.uploads;
  return absl::OkStatus();
}

absl::Status UploadLedger::Hold(const std::string& tenant, int64_t n, const Room& room) {
  MutexLock lock(&mu_);
  Held& held = held_[tenant];
  if (held.bytes + n > room.bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("upload exceeds ", room.why, " with ", held.bytes,
                     " bytes held by the tenant's uploads in progress; nothing was stored"));
  }
  held.bytes += n;
  return absl::OkStatus();
}

void UploadLedger::Release(const std::string& tenant, int64_t uploads, int64_t bytes) {
  MutexLock lock(&mu_);
  auto it = held_.find(tenant);
  if (it == held_.end()) return;
  it->second.uploads -= uploads;
  it->second.bytes -= bytes;
  if (it->second.uploads <= 0 && it->second.bytes <= 0) held_.erase(it);
}

}  // namespace tuneforge
