#include "text/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/status_macros.h"

namespace tuneforge::text {
namespace {

using json = nlohmann::json;

// A token id as the file gives it: an integer, or a json::type_error (a
// float such as 2e30 would not convert to one).
int64_t TokenIdOf(const json& v) {
  if (!v.is_number_integer()) {
    throw json::type_error::create(302, "a token id must be an integer, not " + v.dump(),
                                   nullptr);
  }
  return v.get<int64_t>();
}

std::string Utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the
// others map to code points from 256 up, in byte order.
void BuildByteSymbols(std::string (&symbols)[256]) {
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    symbols[b] = Utf8(printable ? static_cast<uint32_t>(b) : next++);
  }
}

std::string MergeKey(std::string_view left, std::string_view right) {
  std::string key(left);
  key += '\x01';
  key.append(right);
  return key;
}

}  // namespace

using TokenizerOr = absl::StatusOr<std::unique_ptr<BpeTokenizer>>;

BpeTokenizer::~BpeTokenizer() { pcre2_code_free(static_cast<pcre2_code*>(regex_)); }

absl::Status BpeTokenizer::Init(std::unordered_map<std::string, int64_t> vocab,
                               const std::vector<std::pair<std::string, std::string>>& merges,
                               const std::string& pattern) {
  BuildByteSymbols(byte_symbol_);
  std::unordered_map<std::string, uint8_t> symbol_byte;
  for (int b = 0; b < 256; ++b) symbol_byte[byte_symbol_[b]] = static_cast<uint8_t>(b);
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0 || id > (1 << 24)) {
      return absl::InvalidArgumentError("vocab: id " + std::to_string(id) + " out of range");
    }
    max_id = std::max(max_id, id);
  }
  // Ids are dense in every real vocabulary; a sparse one would only make
  // this table huge (one token with id 16,000,000: half a gigabyte).
  if (max_id >= static_cast<int64_t>(vocab.size()) + 65536) {
    return absl::InvalidArgumentError("vocab: id " + std::to_string(max_id) + " for " +
                                      std::to_string(vocab.size()) +
                                      " tokens; token ids must be 0 to the vocabulary's size");
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), "");
  for (const auto& [token, id] : vocab) {
    // Token strings are sequences of byte symbols; turn them back into bytes.
    std::string bytes;
    for (size_t i = 0; i < token.size();) {
      const auto c = static_cast<unsigned char>(token[i]);
      const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      auto it = symbol_byte.find(token.substr(i, n));
      if (it == symbol_byte.end()) {  // not byte-level (an added token): keep as is
        bytes = token;
        break;
      }
      bytes += static_cast<char>(it->second);
      i += n;
    }
    id_to_token_[static_cast<size_t>(id)] = std::move(bytes);
  }
  vocab_ = std::move(vocab);
  for (size_t i = 0; i < merges.size(); ++i) {
    merge_rank_.emplace(MergeKey(merges[i].first, merges[i].second), static_cast<int>(i));
  }
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                         &error_offset, nullptr);
  if (regex_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError("pre-tokenizer pattern: " +
                                      std::string(reinterpret_cast<char*>(message)) +
                                      " at offset " + std::to_string(error_offset));
  }
  pcre2_jit_compile(static_cast<pcre2_code*>(regex_), PCRE2_JIT_COMPLETE);
  return absl::OkStatus();
}

TokenizerOr BpeTokenizer::FromVocabMerges(const std::string& vocab_json,
                                          const std::string& merges_txt) {
  std::string vocab_text, merges_text;
  if (!ReadWholeFile(vocab_json, &vocab_text) || !ReadWholeFile(merges_txt, &merges_text)) {
    return absl::ErrnoToStatus(errno, "cannot read " + vocab_json + " or " + merges_txt);
  }
  std::unordered_map<std::string, int64_t> vocab;
  try {
    const json parsed = json::parse(vocab_text);
    for (const auto& [token, id] : parsed.items()) vocab[token] = TokenIdOf(id);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(vocab_json + ": " + e.what());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  size_t pos = 0;
  while (pos < merges_text.size()) {
    size_t end = merges_text.find('\n', pos);
    if (end == std::string::npos) end = merges_text.size();
    std::string line = merges_text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos) {
      return absl::InvalidArgumentError(merges_txt + ": a merge line without a space: " + line);
    }
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  RETURN_IF_ERROR(t->Init(std::move(vocab), merges, kGpt2Pattern));
  return t;
}

TokenizerOr BpeTokenizer::FromTokenizerJson(const std::string& path) {
  std::string text;
  if (!ReadWholeFile(path, &text)) return absl::ErrnoToStatus(errno, "cannot read " + path);
  return FromTokenizerJsonText(text, path);
}

TokenizerOr BpeTokenizer::FromModelFolder(const std::string& dir) {
  if (std::filesystem::exists(dir + "/tokenizer.json")) {
    return FromTokenizerJson(dir + "/tokenizer.json");
  }
  if (std::filesystem::exists(dir + "/vocab.json")) {
    return FromVocabMerges(dir + "/vocab.json", dir + "/merges.txt");
  }
  return absl::NotFoundError(dir + " has neither tokenizer.json nor vocab.json + merges.txt");
}

TokenizerOr BpeTokenizer::FromTokenizerJsonText(const std::string& text,
                                                const std::string& path) {
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> added;
  std::vector<int64_t> prefix_ids;
  bool ignore_merges = false;
  std::string pattern = kGpt2Pattern;
  try {
    json j = json::parse(text);
    const json& model = j.at("model");
    if (model.value("type", "BPE") != "BPE") {
      return absl::InvalidArgumentError(path + ": model type \"" + model.value("type", "") +
                                        "\" is not supported (BPE is)");
    }
    if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() &&
        model["byte_fallback"].get<bool>()) {
      return absl::InvalidArgumentError(
          path + ": SentencePiece-style BPE with byte_fallback (Llama 2, Mistral v0.1) is "
                 "not supported yet; byte-level BPE (GPT-2, Llama 3, Qwen2) is");
    }
    ignore_merges = model.contains("ignore_merges") && model["ignore_merges"].is_boolean() &&
                    model["ignore_merges"].get<bool>();
    for (const auto& [token, id] : model.at("vocab").items()) vocab[token] = TokenIdOf(id);
    for (const json& m : model.at("merges")) {
      if (m.is_string()) {  // "left right"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos) {
          return absl::InvalidArgumentError(path + ": a merge without a space: " + s);
        }
        merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else {  // ["left", "right"]
        merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
      }
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& t : j["added_tokens"]) {
        AddedToken a{t.at("content").get<std::string>(), TokenIdOf(t.at("id")),
                     t.value("special", false)};
        if (a.content.empty()) continue;
        vocab[a.content] = a.id;
        added.push_back(std::move(a));
      }
    }
    // A Split pre-tokenizer (alone or in a Sequence) carries the regex.
    std::vector<json> pre = {j.value("pre_tokenizer", json())};
    if (pre[0].is_object() && pre[0].value("type", "") == "Sequence") {
      pre = pre[0].value("pretokenizers", std::vector<json>());
    }
    for (const json& p : pre) {
      if (p.is_object() && p.value("type", "") == "Split" && p.contains("pattern") &&
          p["pattern"].contains("Regex")) {
        pattern = p["pattern"]["Regex"].get<std::string>();
      }
    }
    // A TemplateProcessing post-processor (alone or in a Sequence) may put
    // special tokens before each sequence.
    std::vector<json> post = {j.value("post_processor", json())};
    if (post[0].is_object() && post[0].value("type", "") == "Sequence") {
      post = post[0].value("processors", std::vector<json>());
    }
    for (const json& p : post) {
      if (!p.is_object() || p.value("type", "") != "TemplateProcessing") continue;
      for (const json& piece : p.value("single", json::array())) {
        if (!piece.contains("SpecialToken")) break;  // the sequence itself: the prefix ends
        const std::string id = piece["SpecialToken"].at("id").get<std::string>();
        for (const json& n : p.at("special_tokens").at(id).at("ids")) {
          prefix_ids.push_back(TokenIdOf(n));
        }
      }
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(path + ": " + e.what());
  }
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  if (absl::Status s = t->Init(std::move(vocab), merges, pattern); !s.ok()) {
    return absl::InvalidArgumentError(path + ": " + std::string(s.message()));
  }
  std::sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  for (const AddedToken& a : added) {
    t->added_first_byte_[static_cast<unsigned char>(a.content[0])] = true;
  }
  t->added_ = std::move(added);
  t->ignore_merges_ = ignore_merges;
  for (int64_t id : prefix_ids) {
    if (id < 0 || id >= t->vocab_size()) {
      return absl::InvalidArgumentError(path + ": post_processor token id " +
                                        std::to_string(id) + " is not in the vocabulary");
    }
  }
  t->prefix_ids_ = std::move(prefix_ids);
  return t;
}

bool BpeTokenizer::IsSpecial(int64_t id) const {
  for (const AddedToken& a : added_) {
    if (a.id == id) return a.special;
  }
  return false;
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int64_t>& out) const {
  std::vector<std::string> symbols;
  symbols.reserve(piece.size());
  for (unsigned char c : piece) symbols.push_back(byte_symbol_[c]);
  if (ignore_merges_ && symbols.size() > 1) {
    std::string whole;
    for (const std::string& s : symbols) whole += s;
    auto it = vocab_.find(whole);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  while (symbols.size() > 1) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merge_rank_.find(MergeKey(symbols[i], symbols[i + 1]));
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    // Merge every occurrence of the best pair, left to right.
    const std::string left = symbols[best], right = symbols[best + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        ++i;
      } else {
        merged.push_back(std::move(symbols[i]));
      }
    }
    symbols = std::move(merged);
  }
  for (const std::string& s : symbols) {
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      out.push_back(it->second);
    } else {  // a symbol the vocabulary lacks: fall back to its single bytes
      for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        auto byte = vocab_.find(s.substr(i, n));
        if (byte != vocab_.end()) out.push_back(byte->second);
        i += n;
      }
    }
  }
}

std::vector<int64_t> BpeTokenizer::Encode(std::string_view text) const {
  std::vector<int64_t> ids;
  EncodeOrdinary(text, ids);
  return ids;
}

std::vector<int64_t> BpeTokenizer::EncodeWithAddedTokens(std::string_view text) const {
  std::vector<int64_t> ids;
  size_t start = 0;  // the text before `start` is encoded
  for (size_t i = 0; i < text.size();) {
    const AddedToken* match = nullptr;
    if (added_first_byte_[static_cast<unsigned char>(text[i])]) {
      for (const AddedToken& a : added_) {
        if (text.compare(i, a.content.size(), a.content) == 0) {
          match = &a;
          break;
        }
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    EncodeOrdinary(text.substr(start, i - start), ids);
    ids.push_back(match->id);
    i += match->content.size();
    start = i;
  }
  EncodeOrdinary(text.substr(start), ids);
  return ids;
}

void BpeTokenizer::EncodeOrdinary(std::string_view text, std::vector<int64_t>& ids) const {
  // Words repeat: remember each short piece's tokens for this call (a
  // per-call cache keeps Encode() const and thread-safe).
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> cache;  // -> range in `ids`
  auto encode = [&](std::string_view piece) {
    if (piece.size() > 32) return EncodePiece(piece, ids);
    auto it = cache.find(piece);
    if (it != cache.end()) {
      const auto [begin, end] = it->second;
      for (size_t i = begin; i < end; ++i) ids.push_back(ids[i]);
      return;
    }
    const size_t begin = ids.size();
    EncodePiece(piece, ids);
    cache.emplace(piece, std::make_pair(begin, ids.size()));
  };
  auto* code = static_cast<pcre2_code*>(regex_);
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(code, nullptr);
  PCRE2_SIZE start = 0;
  while (start < text.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                               start, 0, match, nullptr);
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
    if (rc < 0 || ov[1] <= start) {
      // No piece matches here (e.g. invalid UTF-8): encode the rest byte by byte.
      EncodePiece(text.substr(start), ids);
      break;
    }
    if (ov[0] > start) encode(text.substr(start, ov[0] - start));
    encode(text.substr(ov[0], ov[1] - ov[0]));
    start = ov[1];
  }
  pcre2_match_data_free(match);
}

std::string BpeTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string text;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size() || (skip_special && IsSpecial(id))) continue;
    text += id_to_token_[static_cast<size_t>(id)];
  }
  return text;
}

std::string ByteLevelTokenizerJson(const std::string& pattern,
                                   const std::vector<std::string>& specials) {
  std::string symbols[256];
  BuildByteSymbols(symbols);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[symbols[b]] = b;
  json added = json::array();
  for (size_t i = 0; i < specials.size(); ++i) {
    const int64_t id = 256 + static_cast<int64_t>(i);
    vocab[specials[i]] = id;
    added.push_back({{"id", id}, {"content", specials[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", true}});
  }
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                     {"trim_offsets", true}, {"use_regex", false}};
  json split = {{"type", "Split"}, {"pattern", {{"Regex", pattern}}},
                {"behavior", "Isolated"}, {"invert", false}};
  json j = {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true},
                         {"trim_offsets", true}, {"use_regex", true}}},
            {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                       {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                       {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                       {"vocab", vocab}, {"merges", json::array()}}}};
  return j.dump(1) + "\n";
}

}  // namespace tuneforge::text
