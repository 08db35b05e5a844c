#include "common/dataset.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace tuneforge {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// FNV-1a, 64-bit, with a separator byte between fields.
void Mix(uint64_t& h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= 0xff;
  h *= 1099511628211ULL;
}

}  // namespace

std::string_view DatasetFormatName(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::kPromptCompletion:
      return "prompt_completion";
    case DatasetFormat::kChat:
      return "chat";
    case DatasetFormat::kText:
      return "text";
    case DatasetFormat::kUnspecified:
      break;
  }
  return "unspecified";
}

std::string_view ChatTemplateName(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatMl:
      return "chatml";
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kPlain:
      break;
  }
  return "plain";
}

std::optional<ChatTemplate> ParseChatTemplate(std::string_view name) {
  for (ChatTemplate t : {ChatTemplate::kPlain, ChatTemplate::kChatMl, ChatTemplate::kLlama3}) {
    if (ChatTemplateName(t) == name) return t;
  }
  return std::nullopt;
}

std::vector<std::string> ChatTemplateTokens(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatMl:
      return {"<|im_end|>", "<|im_start|>"};
    case ChatTemplate::kLlama3:
      return {"<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"};
    case ChatTemplate::kPlain:
      break;
  }
  return {};
}

namespace {

void Add(std::vector<Segment>& out, std::string text, bool trained, bool special = false) {
  if (!text.empty()) out.push_back({std::move(text), trained, special});
}

std::string Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return std::string(s);
}

// The opening of a turn up to its content.
void AddHeader(std::vector<Segment>& out, const std::string& role, bool trained, ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kPlain:
      Add(out, role + ": ", trained);
      return;
    case ChatTemplate::kChatMl:
      Add(out, "<|im_start|>", trained, true);
      Add(out, role + "\n", trained);
      return;
    case ChatTemplate::kLlama3:
      Add(out, "<|start_header_id|>", trained, true);
      Add(out, role, trained);
      Add(out, "<|end_header_id|>", trained, true);
      Add(out, "\n\n", trained);
      return;
  }
}

// One whole message: header, content, end of turn.
void AddMessage(std::vector<Segment>& out, const ChatMessage& m, bool header_trained,
                bool content_trained, ChatTemplate t) {
  AddHeader(out, m.role, header_trained, t);
  switch (t) {
    case ChatTemplate::kPlain:
      Add(out, m.content + "\n", content_trained);
      return;
    case ChatTemplate::kChatMl:
      Add(out, m.content, content_trained);
      Add(out, "<|im_end|>", content_trained, true);
      Add(out, "\n", header_trained);
      return;
    case ChatTemplate::kLlama3:
      Add(out, Trim(m.content), content_trained);
      Add(out, "<|eot_id|>", content_trained, true);
      return;
  }
}

}  // namespace

std::vector<Segment> Render(const Example& e, bool train_on_prompt, ChatTemplate chat) {
  std::vector<Segment> out;
  switch (e.format) {
    case DatasetFormat::kChat:
      for (const ChatMessage& m : e.messages) {
        const bool assistant = m.role == "assistant";
        const bool content_trained = assistant ? m.trained : train_on_prompt;
        AddMessage(out, m, train_on_prompt && (!assistant || m.trained), content_trained, chat);
      }
      return out;
    case DatasetFormat::kText:
      Add(out, e.text, true);
      return out;
    case DatasetFormat::kPromptCompletion:
    case DatasetFormat::kUnspecified:
      break;
  }
  std::string prompt = e.prompt;
  if (!prompt.empty() && !IsSpace(prompt.back()) &&
      !(!e.completion.empty() && IsSpace(e.completion.front()))) {
    prompt += ' ';
  }
  Add(out, std::move(prompt), train_on_prompt);
  out.push_back({e.completion, true});
  return out;
}

bool NeedsEndOfText(const Example& e, ChatTemplate chat) {
  return e.format != DatasetFormat::kChat || chat == ChatTemplate::kPlain;
}

std::vector<Segment> GenerationPrompt(const Example& e, ChatTemplate chat) {
  if (e.format == DatasetFormat::kText) return {};
  if (e.format != DatasetFormat::kChat) {
    std::vector<Segment> segments = Render(e);
    if (segments.size() != 2) return {};
    segments.pop_back();
    return segments;
  }
  size_t last = e.messages.size();
  for (size_t i = 0; i < e.messages.size(); ++i) {
    if (e.messages[i].role == "assistant") last = i;
  }
  std::vector<Segment> prompt;
  for (size_t i = 0; i < last && i < e.messages.size(); ++i) {
    AddMessage(prompt, e.messages[i], false, false, chat);
  }
  AddHeader(prompt, "assistant", false, chat);
  return prompt;
}

std::string JoinText(const std::vector<Segment>& segments) {
  std::string out;
  for (const Segment& s : segments) out += s.text;
  return out;
}

int64_t ByteTokenCount(const Example& e) {
  int64_t n = 1;  // end-of-text
  for (const Segment& s : Render(e)) n += static_cast<int64_t>(s.text.size());
  return n;
}

uint64_t ExampleKey(const Example& e) {
  uint64_t h = 14695981039346656037ULL;
  Mix(h, DatasetFormatName(e.format));
  Mix(h, e.prompt);
  Mix(h, e.completion);
  Mix(h, e.text);
  for (const ChatMessage& m : e.messages) {
    Mix(h, m.role);
    Mix(h, m.content);
    Mix(h, m.trained ? "1" : "0");
  }
  return h;
}

int64_t ValidationCount(int64_t n, double validation_fraction) {
  if (n < 2 || validation_fraction <= 0) return 0;
  auto count = static_cast<int64_t>(std::llround(static_cast<double>(n) * validation_fraction));
  return std::clamp<int64_t>(count, 1, n - 1);
}

Split SplitExamples(const std::vector<uint64_t>& keys, double validation_fraction,
                    uint64_t seed) {
  // Groups of equal keys, in order of first appearance.
  std::map<uint64_t, size_t> group_of;
  std::vector<std::vector<int64_t>> groups;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto [it, added] = group_of.emplace(keys[i], groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(static_cast<int64_t>(i));
  }
  std::vector<size_t> order(groups.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  DeterministicShuffle(order, seed);
  const int64_t target = ValidationCount(static_cast<int64_t>(keys.size()), validation_fraction);
  int64_t taken = 0;
  Split split;
  for (size_t g : order) {
    const auto size = static_cast<int64_t>(groups[g].size());
    auto& side = (taken + size <= target) ? split.validation : split.train;
    if (&side == &split.validation) taken += size;
    side.insert(side.end(), groups[g].begin(), groups[g].end());
  }
  std::sort(split.validation.begin(), split.validation.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

Split SplitExamples(const std::vector<Example>& examples, double validation_fraction,
                    uint64_t seed) {
  std::vector<uint64_t> keys;
  keys.reserve(examples.size());
  for (const Example& e : examples) keys.push_back(ExampleKey(e));
  return SplitExamples(keys, validation_fraction, seed);
}

}  // namespace tuneforge
