// Incremental SHA-256 (OpenSSL underneath), for content addresses and checks.
//
//   Sha256 h;
//   h.Update(chunk1);
//   h.Update(chunk2);
//   std::string hex = h.HexDigest();   // 64 lowercase hex characters
//
// Not thread-safe: one hasher per stream.
#ifndef TUNEFORGE_COMMON_SHA256_H_
#define TUNEFORGE_COMMON_SHA256_H_

#include <memory>
#include <string>
#include <string_view>

namespace tuneforge {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  // Finishes the digest; the hasher may not be updated afterwards.
  std::string HexDigest();

  static std::string Of(std::string_view bytes);

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// True for 64 lowercase hex characters: the only strings that name a blob.
bool IsSha256Hex(std::string_view s);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SHA256_H_
