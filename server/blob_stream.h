// Streams one blob to a client in chunks, reading the next chunk only when
// the previous one has been sent, so a slow reader holds one chunk in memory.
// The message type is BlobChunk (workers fetching inputs) or ArtifactChunk
// (users downloading what a job produced), filled by SetChunk below. The
// caller's token is checked again before each chunk: a revoked one ends the
// stream with UNAUTHENTICATED.
//
//   return new BlobStreamReactor<v1::ArtifactChunk>(std::move(guard), blobs, sha256);
//
// Thread-compatible, as every gRPC reactor is.
#ifndef TUNEFORGE_SERVER_BLOB_STREAM_H_
#define TUNEFORGE_SERVER_BLOB_STREAM_H_

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/blob_store.h"
#include "server/auth.h"
#include "server/grpc_status.h"
#include "tuneforge/v1/job.pb.h"
#include "tuneforge/v1/worker.pb.h"

namespace tuneforge {

inline void SetChunk(v1::BlobChunk& c, int64_t offset, int64_t total, const std::string& sha256) {
  c.set_total_bytes(total);
}

inline void SetChunk(v1::ArtifactChunk& c, int64_t offset, int64_t total,
                     const std::string& sha256) {
  c.set_offset(offset);
  c.set_total_bytes(total);
  if (offset == 0) c.set_sha256(sha256);  // on the first chunk only
}

template <typename Chunk>
class BlobStreamReactor : public grpc::ServerWriteReactor<Chunk> {
 public:
  static constexpr size_t kChunkBytes = 256 * 1024;

  BlobStreamReactor(Guard guard, BlobStore* blobs, const std::string& sha256)
      : guard_(std::move(guard)), sha256_(sha256) {
    if (!blobs->Contains(sha256)) {
      this->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                absl::StrCat("blob ", sha256, " not found")));
      return;
    }
    fd_ = ::open(blobs->PathOf(sha256).c_str(), O_RDONLY | O_CLOEXEC);
    absl::StatusOr<int64_t> size = blobs->SizeOf(sha256);
    if (fd_ < 0 || !size.ok()) {
      this->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "cannot open blob " + sha256));
      return;
    }
    total_ = *size;
    SendNext();
  }
  ~BlobStreamReactor() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream broke"));
      return;
    }
    SendNext();
  }
  void OnDone() override { delete this; }

 private:
  void SendNext() {
    if (absl::Status s = guard_.Recheck(); !s.ok()) {
      this->Finish(ToGrpc(guard_.Done(sha256_, s)));
      return;
    }
    std::string* data = chunk_.mutable_data();
    data->resize(kChunkBytes);
    ssize_t n;
    do {
      n = ::read(fd_, data->data(), kChunkBytes);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      this->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "cannot read blob " + sha256_));
      return;
    }
    if (n == 0 && sent_ > 0) {
      this->Finish(grpc::Status::OK);
      return;
    }
    data->resize(static_cast<size_t>(n));
    SetChunk(chunk_, sent_, total_, sha256_);
    sent_ += n;
    if (n == 0) {  // an empty blob: one empty chunk carries its digest
      this->StartWriteAndFinish(&chunk_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    this->StartWrite(&chunk_);
  }

  Guard guard_;
  const std::string sha256_;
  int fd_ = -1;
  int64_t total_ = 0;
  int64_t sent_ = 0;
  Chunk chunk_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_BLOB_STREAM_H_
