#include "server/page_token.h"

#include <fcntl.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace tuneforge {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kMacBytes = 16;  // a truncated HMAC-SHA256: 128 bits

// Position and MAC in one URL-safe string: "{hex(position)}.{hex(mac)}".
constexpr char kSeparator = '.';

}  // namespace

absl::StatusOr<PageTokens> PageTokens::LoadOrCreate(const std::string& path) {
  std::string key;
  if (ReadWholeFile(path, &key) && key.size() == kKeyBytes) return PageTokens(std::move(key));
  unsigned char bytes[kKeyBytes];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return absl::InternalError("the system's random number generator failed");
  }
  key.assign(reinterpret_cast<const char*>(bytes), sizeof bytes);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const bool written = fd >= 0 && ::write(fd, key.data(), key.size()) ==
                                      static_cast<ssize_t>(key.size()) && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write the page-token key ", path));
  }
  return PageTokens(std::move(key));
}

std::string PageTokens::Mac(std::string_view tenant, std::string_view query,
                            std::string_view position) const {
  // Lengths first, so no two (tenant, query, position) triples share bytes.
  std::string message;
  for (std::string_view part : {tenant, query, position}) {
    message += std::to_string(part.size()) + ":";
    message.append(part);
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &n);
  return std::string(reinterpret_cast<const char*>(mac), kMacBytes);
}

std::string PageTokens::Make(std::string_view tenant, std::string_view query,
                             std::string_view position) const {
  return absl::BytesToHexString(std::string(position)) + kSeparator +
         absl::BytesToHexString(Mac(tenant, query, position));
}

absl::StatusOr<std::string> PageTokens::Read(std::string_view token, std::string_view tenant,
                                             std::string_view query) const {
  if (token.empty()) return std::string();
  const absl::Status refused = absl::InvalidArgumentError(
      "page_token: not a token this server gave for this query (another query's, altered, or "
      "not a token at all); list again without a page_token");
  const size_t dot = token.find(kSeparator);
  if (dot == std::string_view::npos || token.size() > 1024) return refused;
  const std::string_view position_hex = token.substr(0, dot);
  const std::string_view mac_hex = token.substr(dot + 1);
  auto is_hex = [](std::string_view s) {
    return s.size() % 2 == 0 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  };
  if (!is_hex(position_hex) || !is_hex(mac_hex) || mac_hex.size() != 2 * kMacBytes) {
    return refused;
  }
  const std::string position = absl::HexStringToBytes(std::string(position_hex));
  const std::string given = absl::HexStringToBytes(std::string(mac_hex));
  const std::string expected = Mac(tenant, query, position);
  if (CRYPTO_memcmp(given.data(), expected.data(), kMacBytes) != 0) return refused;
  return position;
}

}  // namespace tuneforge
