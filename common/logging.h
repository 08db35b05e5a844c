// How the long-running binaries log: readable text (spdlog's pattern), or
// with --log-format=json one JSON object per line, escaped properly (spdlog's
// own patterns do not escape JSON): time, level, message, the fields given
// here (e.g. the worker's name) and the job a message names ("jobs/ID").
#ifndef TUNEFORGE_COMMON_LOGGING_H_
#define TUNEFORGE_COMMON_LOGGING_H_

#include <map>
#include <string>

#include "absl/status/status.h"

namespace tuneforge {

// `format`: "text" (with `text_pattern`, spdlog's syntax) or "json" (with
// `fields` added to every line). INVALID_ARGUMENT for anything else.
absl::Status SetLogFormat(const std::string& format, const std::string& text_pattern,
                          const std::map<std::string, std::string>& fields = {});

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_LOGGING_H_
