// A whole file as a StatusOr, for the binaries' flags that name files (TLS
// certificates and keys, the tokens file). Header-only over file_util.h, so
// the libtorch-only engine build, which has no Abseil, never includes it.
#ifndef TUNEFORGE_COMMON_READ_FILE_H_
#define TUNEFORGE_COMMON_READ_FILE_H_

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace tuneforge {

// NOT_FOUND "{what}: cannot read {path}: {reason}" when it cannot be read.
inline absl::StatusOr<std::string> ReadFileOr(const std::string& path, const std::string& what) {
  std::string text;
  if (!ReadWholeFile(path, &text)) {
    return absl::NotFoundError(
        absl::StrCat(what, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  return text;
}

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_READ_FILE_H_
