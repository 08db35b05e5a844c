// Training examples and how they become text.
//
// A dataset holds one kind of record (see DatasetFormat). Each Example renders
// to segments of text, each marked trained or not: what the engine tokenises
// and computes loss on, and what the validator counts tokens of, so the two
// never disagree.
//
//   prompt/completion   "<prompt> <completion>" + end-of-text; loss on the
//                       completion and end-of-text (train_on_prompt: all)
//   chat                per ChatTemplate; loss on assistant contents (a
//                       `weight` of 0 turns one off) and, with a template, the
//                       end-of-turn token that closes them
//   text                the document + end-of-text, all trained
//
// Depends only on the C++ standard library, so the libtorch-only engine build
// links it. Thread-safe: all functions are pure.
#ifndef TUNEFORGE_COMMON_DATASET_H_
#define TUNEFORGE_COMMON_DATASET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

namespace tuneforge {

enum class DatasetFormat { kUnspecified, kPromptCompletion, kChat, kText };

// "prompt_completion", "chat", "text" or "unspecified".
std::string_view DatasetFormatName(DatasetFormat format);

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;  // e.g. "How many leave days do I get?"
  bool trained = true;  // `weight`; only assistant messages are ever trained
};

struct Example {
  DatasetFormat format = DatasetFormat::kPromptCompletion;
  std::string prompt;      // prompt/completion: e.g. "How many days of leave?"
  std::string completion;  // prompt/completion: e.g. "25 days a year."
  std::vector<ChatMessage> messages;  // chat
  std::string text;                   // text: a whole document
};

// How chat examples become text, as the families' own chat templates write
// them (prompt/completion and text documents do not use one):
//   kPlain   "{role}: {content}\n" per message, then end-of-text
//   kChatMl  "<|im_start|>{role}\n{content}<|im_end|>\n" (Qwen2, SmolLM)
//   kLlama3  "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
//            after the tokenizer's <|begin_of_text|>; contents trimmed, as
//            Llama 3's template does
// Template markers are special tokens: the engine encodes them as one token
// each, and a marker typed in user text stays text.
enum class ChatTemplate { kPlain, kChatMl, kLlama3 };

// "plain", "chatml", "llama3".
std::string_view ChatTemplateName(ChatTemplate t);
std::optional<ChatTemplate> ParseChatTemplate(std::string_view name);
// The special tokens the template writes; the first ends a turn (generation
// stops there). Empty for kPlain.
std::vector<std::string> ChatTemplateTokens(ChatTemplate t);

struct Segment {
  std::string text;
  bool trained = false;
  bool special = false;  // text is one special token, e.g. "<|im_end|>"
};

// The example's text in order. A prompt is followed by one space unless it or
// the completion already has whitespace there. With train_on_prompt every
// segment is trained but weight-0 assistant turns.
std::vector<Segment> Render(const Example& e, bool train_on_prompt = false,
                            ChatTemplate chat = ChatTemplate::kPlain);

// Whether the engine appends end-of-text (trained when the last segment is):
// always, but after a chat template's turns, which end with its own token.
bool NeedsEndOfText(const Example& e, ChatTemplate chat);

// What a model continues to complete an example: the prompt (with its
// separator) or, for chat, every message before the last assistant turn and
// that turn's header. Empty for text documents.
std::vector<Segment> GenerationPrompt(const Example& e, ChatTemplate chat = ChatTemplate::kPlain);

// The segments' text joined, special tokens as written.
std::string JoinText(const std::vector<Segment>& segments);

// Tokens of the example under the byte tokenizer: rendered bytes + 1.
int64_t ByteTokenCount(const Example& e);

// A 64-bit hash of the example's content; equal examples hash equal.
uint64_t ExampleKey(const Example& e);

// Splits examples into training and validation sets, deterministically from
// `seed`: the same keys, fraction and seed give the same split everywhere.
// Examples with equal keys (exact duplicates) always land on the same side.
// The validation set gets ValidationCount(n, fraction) examples when the
// duplicate groups allow it, never more.
struct Split {
  std::vector<int64_t> train;       // indices, ascending
  std::vector<int64_t> validation;  // indices, ascending
};
Split SplitExamples(const std::vector<uint64_t>& keys, double validation_fraction,
                    uint64_t seed);
Split SplitExamples(const std::vector<Example>& examples, double validation_fraction,
                    uint64_t seed);

// Shuffles `v` in place with Fisher-Yates over mt19937_64 seeded with `seed`:
// unlike std::shuffle, the same order on every platform and library.
template <typename T>
void DeterministicShuffle(std::vector<T>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

// How many of n examples a split at `validation_fraction` holds out: at
// least one for a positive fraction when n >= 2, and never all of them.
int64_t ValidationCount(int64_t n, double validation_fraction);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_DATASET_H_
