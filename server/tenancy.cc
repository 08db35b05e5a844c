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

}  // namespace tuneforge
