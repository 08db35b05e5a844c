// Byte-level BPE tokenizers in Hugging Face's formats: `tokenizer.json` (a
// BPE model with byte-level pre-tokenization, as GPT-2, Llama 3 and Qwen ship
// it) and the older `vocab.json` + `merges.txt` pair.
//
// Encoding: the text is split by the pre-tokenizer's regex (GPT-2's unless
// the tokenizer.json names another, e.g. Llama 3's), each piece's bytes are
// mapped to GPT-2's printable byte alphabet, and merges are applied lowest
// rank first. Decoding maps tokens back to bytes: decode(encode(s)) == s.
//
//   absl::StatusOr<std::unique_ptr<BpeTokenizer>> tok =
//       BpeTokenizer::FromVocabMerges("vocab.json", "merges.txt");
//   std::vector<int64_t> ids = (*tok)->Encode("Hello world");   // {15496, 995} for GPT-2
//
// A broken or unsupported file is INVALID_ARGUMENT naming the file and what
// is wrong; a missing one NOT_FOUND.
//
// Encode() is "ordinary": added and special tokens in the text (e.g.
// "<|endoftext|>") are encoded as text, so user data cannot inject them.
// EncodeWithAddedTokens() matches them first, as Hugging Face's tokenizers do.
// `model.ignore_merges` (Llama 3) and a TemplateProcessing post-processor that
// adds a beginning-of-text token (prefix_ids()) are read from tokenizer.json.
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

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tuneforge::text {

class BpeTokenizer {
 public:
  // GPT-2's pre-tokenization pattern.
  static constexpr const char* kGpt2Pattern =
      R"('(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

  // Llama 3's (and Qwen2's) pre-tokenization pattern.
  static constexpr const char* kLlama3Pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromTokenizerJson(
      const std::string& path);
  // The same from the file's text; `origin` names it in errors.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromTokenizerJsonText(
      const std::string& text, const std::string& origin);
  // A model folder's tokenizer: tokenizer.json, else vocab.json + merges.txt.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromModelFolder(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromVocabMerges(
      const std::string& vocab_json, const std::string& merges_txt);
  ~BpeTokenizer();

  std::vector<int64_t> Encode(std::string_view text) const;
  std::vector<int64_t> EncodeWithAddedTokens(std::string_view text) const;
  // Added tokens' text is included unless skip_special and the token is special.
  std::string Decode(const std::vector<int64_t>& ids, bool skip_special = false) const;
  // Tokens the post-processor puts before every sequence, e.g. Llama 3's
  // <|begin_of_text|>; empty for GPT-2.
  const std::vector<int64_t>& prefix_ids() const { return prefix_ids_; }
  bool IsSpecial(int64_t id) const;
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  int64_t merge_count() const { return static_cast<int64_t>(merge_rank_.size()); }
  // The id of a vocabulary entry as written in the files, e.g. "<|endoftext|>".
  std::optional<int64_t> TokenId(const std::string& token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }

 private:
  BpeTokenizer() = default;
  // Builds the tokenizer; INVALID_ARGUMENT says what is wrong.
  absl::Status Init(std::unordered_map<std::string, int64_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   const std::string& pattern);
  void EncodePiece(std::string_view piece, std::vector<int64_t>& out) const;
  void EncodeOrdinary(std::string_view text, std::vector<int64_t>& out) const;

  struct AddedToken {
    std::string content;
    int64_t id = 0;
    bool special = false;
  };
  std::vector<AddedToken> added_;        // longest first, so the longest match wins
  bool added_first_byte_[256] = {};      // whether some added token starts with this byte
  bool ignore_merges_ = false;           // a piece that is a whole vocabulary entry stays whole
  std::vector<int64_t> prefix_ids_;

  std::unordered_map<std::string, int64_t> vocab_;  // byte-level token -> id
  std::vector<std::string> id_to_token_;            // raw bytes of each id
  std::unordered_map<std::string, int> merge_rank_; // "left\x01right" -> rank
  std::string byte_symbol_[256];                    // byte -> its printable UTF-8 symbol
  void* regex_ = nullptr;                           // pcre2_code*
};

// A tokenizer.json with one token per byte (in byte order: id b is byte b),
// no merges, and `specials` as special added tokens with the ids after 255.
// The presets use it: every string round-trips, and it goes through the
// same loader as a Hub model's tokenizer.
std::string ByteLevelTokenizerJson(const std::string& pattern,
                                   const std::vector<std::string>& specials);

}  // namespace tuneforge::text

#endif  // TUNEFORGE_WORKER_ENGINE_BPE_TOKENIZER_H_
