// A content-addressed blob directory: every blob is named by the SHA-256 of
// its bytes, so no client string ever becomes a path and identical uploads are
// stored once.
//
// Layout under `root`: `blobs/ab/abcd…` (the digest, sharded by its first two
// characters) and `tmp/` for blobs being written. A blob is written to a temp
// file, fsynced, checked, then renamed into place: readers never see a partial
// blob, and a crash leaves only temp files, removed at the next Open.
//
//   auto store = BlobStore::Open("/var/lib/tuneforge");
//   auto writer = (*store)->NewWriter();
//   RETURN_IF_ERROR((*writer)->Append(chunk));
//   ASSIGN_OR_RETURN(std::string sha, (*writer)->Commit());
//
// Thread-safe: BlobStore's methods may be called concurrently; each BlobWriter
// belongs to one thread.
#ifndef TUNEFORGE_COMMON_BLOB_STORE_H_
#define TUNEFORGE_COMMON_BLOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sha256.h"

namespace tuneforge {

class BlobWriter {
 public:
  ~BlobWriter();  // removes the temp file unless published
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  absl::Status Append(std::string_view bytes);
  int64_t size() const { return size_; }

  // Ends writing: flushes the bytes to disk and returns their digest. When
  // `expected_sha256` is not empty and differs, the result is
  // INVALID_ARGUMENT (and Publish() will not be allowed).
  absl::StatusOr<std::string> Seal(std::string_view expected_sha256 = "");
  bool sealed() const { return sealed_; }
  // The digest, once sealed.
  const std::string& sha256() const { return sha256_; }
  // Where the bytes are until published: a sealed blob can be read there
  // (checked) before it is published.
  const std::string& temp_path() const { return tmp_path_; }
  // Moves the sealed blob into place; from then on readers see it.
  absl::Status Publish();
  // Seal() then Publish(); returns the digest.
  absl::StatusOr<std::string> Commit(std::string_view expected_sha256 = "");

 private:
  friend class BlobStore;
  BlobWriter(std::string root, std::string tmp_path, int fd);

  std::string root_;
  std::string tmp_path_;
  int fd_;
  int64_t size_ = 0;
  Sha256 hash_;
  std::string sha256_;      // set by a successful Seal()
  bool sealed_ = false;
  bool published_ = false;
};

class BlobStore {
 public:
  // Creates the directories when missing and clears stale temp files.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(std::string root);

  absl::StatusOr<std::unique_ptr<BlobWriter>> NewWriter();

  // Path of the blob with this digest; it may not exist.
  std::string PathOf(std::string_view sha256) const;
  bool Contains(std::string_view sha256) const;
  // The bytes of every published blob (a walk of the directory).
  int64_t TotalBytes() const;
  // The digests of every published blob (a walk of the directory).
  std::vector<std::string> List() const;
  absl::StatusOr<int64_t> SizeOf(std::string_view sha256) const;
  absl::StatusOr<std::string> ReadAll(std::string_view sha256) const;
  absl::Status Remove(std::string_view sha256);

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

// Reads a whole file; NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_BLOB_STORE_H_
