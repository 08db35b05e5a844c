// Resource ids: datasets, models, jobs and lease tokens. The scheduler takes
// its source in SchedulerOptions::new_id, so tests may name jobs in order.
// Thread-safe.
#ifndef TUNEFORGE_SERVER_IDS_H_
#define TUNEFORGE_SERVER_IDS_H_

#include <functional>
#include <string>

namespace tuneforge {

// A new random id: 12 characters of [a-z0-9], starting with a letter, from
// the kernel's CSPRNG, so ids (and the lease tokens made of them) cannot be
// predicted from the ones a tenant has seen.
std::string NewId();

using IdSource = std::function<std::string()>;

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_IDS_H_
