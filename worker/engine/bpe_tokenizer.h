// Byte-level BPE tokenizers in Hugging Face's formats: `tokenizer.json` (a
// BPE model with byte-level pre-tokenization, as GPT-2, Llama 3 and Qwen ship
// it) and the older `vocab.json` + `merges.txt` pair.
//
// Encoding: the text is split by the pre-tokenizer's regex (GPT-2's unless
// the tokenizer.json names another, e.g. Llama 3's), each piece's bytes are
// mapped to GPT-2's printable byte alphabet, and merges are applied lowest
// rank first. Decoding maps tokens back to bytes: decode(encode(s)) == s.
//
//   std::string error;
//   auto tok = BpeTokenizer::FromVocabMerges("vocab.json", "merges.txt", &error);
//   std::vector<int64_t> ids = tok->Encode("Hello world");   // {15496, 995} for GPT-2
//
// Encode() is "ordinary": special tokens in the text are encoded as text.
// Depends on PCRE2 (Unicode property classes) and nlohmann/json, not libtorch.
// Thread-safe: immutable after construction.
#ifndef TUNEFORGE_WORKER_ENGINE_BPE_TOKENIZER_H_
#define TUNEFORGE_WORKER_ENGINE_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tuneforge::engine {

class BpeTokenizer {
 public:
  // GPT-2's pre-tokenization pattern.
  static constexpr const char* kGpt2Pattern =
      R"('(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

  static std::unique_ptr<BpeTokenizer> FromTokenizerJson(const std::string& path,
                                                         std::string* error);
  static std::unique_ptr<BpeTokenizer> FromVocabMerges(const std::string& vocab_json,
                                                       const std::string& merges_txt,
                                                       std::string* error);
  ~BpeTokenizer();

  std::vector<int64_t> Encode(std::string_view text) const;
  std::string Decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  // The id of a vocabulary entry as written in the files, e.g. "<|endoftext|>".
  std::optional<int64_t> TokenId(const std::string& token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }

 private:
  BpeTokenizer() = default;
  // Builds the tokenizer; "" or what is wrong.
  std::string Init(std::unordered_map<std::string, int64_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   const std::string& pattern);
  void EncodePiece(std::string_view piece, std::vector<int64_t>& out) const;

  std::unordered_map<std::string, int64_t> vocab_;  // byte-level token -> id
  std::vector<std::string> id_to_token_;            // raw bytes of each id
  std::unordered_map<std::string, int> merge_rank_; // "left\x01right" -> rank
  std::string byte_symbol_[256];                    // byte -> its printable UTF-8 symbol
  void* regex_ = nullptr;                           // pcre2_code*
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_BPE_TOKENIZER_H_
