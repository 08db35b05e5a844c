// Small file helpers with no dependencies beyond the standard library.
#ifndef TUNEFORGE_COMMON_FILE_UTIL_H_
#define TUNEFORGE_COMMON_FILE_UTIL_H_

#include <string>

namespace tuneforge {

// Reads the whole file at `path` into `*out`; false (errno set) on failure.
bool ReadWholeFile(const std::string& path, std::string* out);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_FILE_UTIL_H_
