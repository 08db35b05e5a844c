#include "server/ids.h"

#include <cstdlib>

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

namespace tuneforge {

std::string NewId() {
  // Each byte is used only below the largest multiple of the alphabet's
  // size, so every character is equally likely.
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id;
  id.reserve(12);
  while (id.size() < 12) {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) {
      spdlog::critical("the system's random number generator failed");
      std::abort();
    }
    for (unsigned char b : bytes) {
      if (id.size() == 12) break;
      if (id.empty()) {
        if (b < 26 * 9) id += kChars[b % 26];  // a letter first
      } else if (b < 36 * 7) {
        id += kChars[b % 36];
      }
    }
  }
  return id;
}

}  // namespace tuneforge
