// `jobs watch` (and `jobs create --follow`): a job's events followed live
// until it ends, as a view redrawn in place on a terminal, or one line (or
// one JSON/YAML document) per event otherwise.
#ifndef TUNEFORGE_CLIENT_WATCH_VIEW_H_
#define TUNEFORGE_CLIENT_WATCH_VIEW_H_

#include <cstdint>
#include <string>

#include "client/api_client.h"

namespace tuneforge::cli {

// Prints every event of job `name` after sequence `after` until the job
// ends, then (as text) its summary. Returns 0 if it succeeded, 1 if it
// failed or was cancelled, or the exit code of an RPC that failed.
int WatchJob(ApiClient& api, const std::string& output, const std::string& name, int64_t after);

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_WATCH_VIEW_H_
