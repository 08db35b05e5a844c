// The byte tokenizer of the tiny presets: one token per byte (ids 0..255), then
// an end-of-text token and a padding token. Every string round-trips exactly.
//
// Thread-safe: stateless.
#ifndef TUNEFORGE_WORKER_ENGINE_BYTE_TOKENIZER_H_
#define TUNEFORGE_WORKER_ENGINE_BYTE_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tuneforge::engine {

class ByteTokenizer {
 public:
  static constexpr int64_t kEndOfText = 256;  // ends every example
  static constexpr int64_t kPad = 257;        // fills batches; never trained on
  static constexpr int64_t kVocabSize = 258;

  static void Encode(std::string_view text, std::vector<int64_t>& out) {
    for (unsigned char c : text) out.push_back(c);
  }
  static std::vector<int64_t> Encode(std::string_view text) {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    Encode(text, ids);
    return ids;
  }
  // Drops special tokens; bytes come back as they went in.
  static std::string Decode(const std::vector<int64_t>& ids) {
    std::string text;
    for (int64_t id : ids) {
      if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
    }
    return text;
  }
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_BYTE_TOKENIZER_H_
