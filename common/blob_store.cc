#include "common/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace tuneforge {
namespace {

namespace fs = std::filesystem;

// The message names the file by its place under the blob root, never by the
// server's own path: it may reach a client.
absl::Status ErrnoStatus(const char* what, const std::string& path) {
  int err = errno;
  const size_t under = path.rfind("/blobs/") != std::string::npos ? path.rfind("/blobs/")
                                                                   : path.rfind("/tmp/");
  const std::string name = under == std::string::npos ? "a blob" : path.substr(under + 1);
  std::string msg = absl::StrCat(what, " ", name, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server's disk is full (", msg, "); retry once space has been freed"));
  }
  if (err == ENOENT) return absl::NotFoundError(msg);
  return absl::InternalError(msg);
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return ErrnoStatus("open directory", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace

BlobWriter::BlobWriter(std::string root, std::string tmp_path, int fd)
    : root_(std::move(root)), tmp_path_(std::move(tmp_path)), fd_(fd) {}

BlobWriter::~BlobWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!published_) ::unlink(tmp_path_.c_str());
}

absl::Status BlobWriter::Append(std::string_view bytes) {
  if (sealed_) return absl::FailedPreconditionError("blob already sealed");
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", tmp_path_);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  hash_.Update(bytes);
  size_ += static_cast<int64_t>(bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> BlobWriter::Seal(std::string_view expected_sha256) {
  if (sealed_) return absl::FailedPreconditionError("blob already sealed");
  sealed_ = true;
  std::string sha = hash_.HexDigest();
  if (!expected_sha256.empty() && expected_sha256 != sha) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sha256 mismatch: the client said ", std::string(expected_sha256), " but the ", size_,
        " bytes received hash to ", sha, "; the upload was corrupted, send it again"));
  }
  if (::fsync(fd_) != 0) return ErrnoStatus("fsync", tmp_path_);
  ::close(fd_);
  fd_ = -1;
  sha256_ = std::move(sha);
  return sha256_;
}

absl::Status BlobWriter::Publish() {
  if (sha256_.empty() || published_) {
    return absl::FailedPreconditionError("only a sealed, unpublished blob can be published");
  }
  std::string dir = absl::StrCat(root_, "/blobs/", sha256_.substr(0, 2));
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("mkdir", dir);
  std::string final_path = absl::StrCat(dir, "/", sha256_);
  if (::rename(tmp_path_.c_str(), final_path.c_str()) != 0) {
    return ErrnoStatus("rename to", final_path);
  }
  published_ = true;
  return FsyncDir(dir);
}

absl::StatusOr<std::string> BlobWriter::Commit(std::string_view expected_sha256) {
  absl::StatusOr<std::string> sha = Seal(expected_sha256);
  if (!sha.ok()) return sha;
  if (absl::Status s = Publish(); !s.ok()) return s;
  return sha;
}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(std::string root) {
  std::error_code ec;
  fs::create_directories(root + "/blobs", ec);
  if (!ec) fs::create_directories(root + "/tmp", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create blob directories under ", root, ": ", ec.message()));
  }
  for (const auto& entry : fs::directory_iterator(root + "/tmp", ec)) {
    fs::remove(entry.path(), ec);  // partial writes of an earlier process
  }
  return std::unique_ptr<BlobStore>(new BlobStore(std::move(root)));
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::NewWriter() {
  static std::atomic<uint64_t> counter{0};
  std::string path = absl::StrCat(root_, "/tmp/upload-", ::getpid(), "-", counter++);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create", path);
  return std::unique_ptr<BlobWriter>(new BlobWriter(root_, std::move(path), fd));
}

std::string BlobStore::PathOf(std::string_view sha256) const {
  return absl::StrCat(root_, "/blobs/", std::string(sha256.substr(0, 2)), "/",
                      std::string(sha256));
}

bool BlobStore::Contains(std::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st;
  return ::stat(PathOf(sha256).c_str(), &st) == 0;
}

absl::StatusOr<int64_t> BlobStore::SizeOf(std::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("not a sha256 digest");
  struct stat st;
  std::string path = PathOf(sha256);
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path);
  return static_cast<int64_t>(st.st_size);
}

absl::StatusOr<std::string> BlobStore::ReadAll(std::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("not a sha256 digest");
  return ReadFileToString(PathOf(sha256));
}

absl::Status BlobStore::Remove(std::string_view sha256) {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("not a sha256 digest");
  std::string path = PathOf(sha256);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove", path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::string bytes;
  if (!ReadWholeFile(path, &bytes)) {
    const int err = errno;
    std::string msg = absl::StrCat("read ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  return bytes;
}

int64_t BlobStore::TotalBytes() const {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(root_ + "/blobs", ec)) {
    if (entry.is_regular_file(ec)) total += static_cast<int64_t>(entry.file_size(ec));
  }
  return total;
}

std::vector<std::string> BlobStore::List() const {
  std::vector<std::string> digests;
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(root_ + "/blobs", ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && IsSha256Hex(name)) digests.push_back(std::move(name));
  }
  return digests;
}

}  // namespace tuneforge
