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

std::vector<Segment> Render(const Example& e, bool train_on_prompt) {
  std::vector<Segment> out;
  switch (e.format) {
    case DatasetFormat::kChat:
      for (const ChatMessage& m : e.messages) {
        const bool trained = m.role == "assistant" && m.trained;
        out.push_back({m.role + ": ", train_on_prompt && trained});
        out.push_back({m.content + "\n", trained || (train_on_prompt && m.role != "assistant")});
      }
      return out;
    case DatasetFormat::kText:
      out.push_back({e.text, true});
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
  if (!prompt.empty()) out.push_back({std::move(prompt), train_on_prompt});
  out.push_back({e.completion, true});
  return out;
}

std::string GenerationPrompt(const Example& e) {
  if (e.format == DatasetFormat::kText) return "";
  if (e.format != DatasetFormat::kChat) {
    std::vector<Segment> segments = Render(e);
    return segments.size() == 2 ? segments[0].text : "";
  }
  size_t last = e.messages.size();
  for (size_t i = 0; i < e.messages.size(); ++i) {
    if (e.messages[i].role == "assistant") last = i;
  }
  std::string prompt;
  for (size_t i = 0; i < last && i < e.messages.size(); ++i) {
    prompt += e.messages[i].role + ": " + e.messages[i].content + "\n";
  }
  return prompt + "assistant: ";
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
