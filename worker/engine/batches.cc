#include "worker/engine/batches.h"

#include <algorithm>
#include <random>
#include <stdexcept>

namespace tuneforge::engine {

// The chat template `name` names ("auto": the one whose special tokens the
// tokenizer has), or throws saying which token is missing.
ChatTemplate ResolveChatTemplate(const std::string& name, const BpeTokenizer& tokenizer) {
  // The first of the template's tokens the tokenizer lacks, or "".
  auto missing = [&](ChatTemplate t) {
    for (const std::string& token : ChatTemplateTokens(t)) {
      if (!tokenizer.TokenId(token)) return token;
    }
    return std::string();
  };
  if (name == "auto") {
    for (ChatTemplate t : {ChatTemplate::kChatMl, ChatTemplate::kLlama3}) {
      if (missing(t).empty()) return t;
    }
    return ChatTemplate::kPlain;
  }
  std::optional<ChatTemplate> t = ParseChatTemplate(name);
  if (!t) throw std::invalid_argument("unknown chat template '" + name + "': auto, plain, chatml or llama3");
  if (std::string token = missing(*t); !token.empty()) {
    throw std::invalid_argument("chat template " + name + " needs the token " + token +
                                ", which the model's tokenizer does not have");
  }
  return *t;
}

// Appends the tokens of `segments`: special ones as their single token,
// text ordinarily (so a marker typed in user text stays text).
void EncodeSegments(const BpeTokenizer& tokenizer, const std::vector<Segment>& segments,
                    std::vector<int64_t>& tokens, std::vector<bool>* trained) {
  for (const Segment& segment : segments) {
    if (segment.special) {
      tokens.push_back(*tokenizer.TokenId(segment.text));  // ResolveChatTemplate checked it
    } else {
      for (int64_t id : tokenizer.Encode(segment.text)) tokens.push_back(id);
    }
    if (trained) trained->resize(tokens.size(), segment.trained);
  }
}

namespace {

// Tokenises an example into sequences of at most max_len inputs: the
// tokenizer's prefix (e.g. <|begin_of_text|>), the rendered segments, and
// end-of-text unless a chat template ended it. Text documents longer than
// that become several sequences (nothing is lost); other examples are
// truncated, and `*truncated` says so.
std::vector<Sequence> Tokenize(const ModelFolder& m, const Example& e, int64_t max_len,
                               bool train_on_prompt, ChatTemplate chat, bool* truncated) {
  std::vector<int64_t> tokens = m.tokenizer->prefix_ids();
  std::vector<bool> trained(tokens.size(), false);  // whether tokens[i] carries loss
  const std::vector<Segment> segments = Render(e, train_on_prompt, chat);
  EncodeSegments(*m.tokenizer, segments, tokens, &trained);
  if (NeedsEndOfText(e, chat)) {
    tokens.push_back(m.stop_ids[0]);
    trained.push_back(!segments.empty() && segments.back().trained);
  }

  const auto n = static_cast<int64_t>(tokens.size());
  *truncated = false;
  std::vector<Sequence> out;
  // Window [begin, begin + max_len + 1): inputs are all but its last token.
  for (int64_t begin = 0; begin + 1 < n; begin += max_len) {
    const int64_t end = std::min(n, begin + max_len + 1);
    Sequence s;
    s.ids.assign(tokens.begin() + begin, tokens.begin() + end - 1);
    for (int64_t i = begin + 1; i < end; ++i) s.targets.push_back(trained[i] ? tokens[i] : kIgnore);
    out.push_back(std::move(s));
    if (end < n && e.format != DatasetFormat::kText) {
      *truncated = true;
      break;
    }
  }
  return out;
}

}  // namespace

// Packs sequences, in the given order, into rows of at most max_len tokens:
// each row takes sequences while they fit (next fit).
std::vector<Sequence> Pack(const std::vector<Sequence>& seqs, const std::vector<int64_t>& order,
                           int64_t max_len) {
  std::vector<Sequence> rows;
  Sequence row;
  for (int64_t i : order) {
    const Sequence& s = seqs[i];
    const auto len = static_cast<int64_t>(s.ids.size());
    if (!row.ids.empty() && static_cast<int64_t>(row.ids.size()) + len > max_len) {
      rows.push_back(std::move(row));
      row = Sequence();
    }
    row.ids.insert(row.ids.end(), s.ids.begin(), s.ids.end());
    row.targets.insert(row.targets.end(), s.targets.begin(), s.targets.end());
    row.lengths.push_back(len);
  }
  if (!row.ids.empty()) rows.push_back(std::move(row));
  return rows;
}

// The order of the sequences in an epoch: shuffled from the seed and the
// epoch; with grouping, sorted by length within chunks of 64 batches and
// then the full batches shuffled (the last, partial one stays last), so
// batches hold similar lengths yet come in random order.
std::vector<int64_t> EpochOrder(const std::vector<Sequence>& seqs, const TrainConfig& c,
                                int epoch) {
  std::vector<int64_t> order(seqs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  const uint64_t seed = c.seed * 1000003ULL + static_cast<uint64_t>(epoch);
  DeterministicShuffle(order, seed);
  if (!c.group_by_length || c.packing || c.batch_size == 1) return order;
  const auto batch = static_cast<size_t>(c.batch_size);
  const size_t chunk = batch * 64;
  for (size_t begin = 0; begin < order.size(); begin += chunk) {
    std::stable_sort(order.begin() + begin, order.begin() + std::min(order.size(), begin + chunk),
                     [&](int64_t a, int64_t b) { return seqs[a].ids.size() > seqs[b].ids.size(); });
  }
  std::vector<size_t> batches(order.size() / batch);  // full batches' starts
  for (size_t i = 0; i < batches.size(); ++i) batches[i] = i * batch;
  DeterministicShuffle(batches, seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<int64_t> grouped;
  grouped.reserve(order.size());
  for (size_t start : batches) grouped.insert(grouped.end(), order.begin() + start, order.begin() + start + batch);
  grouped.insert(grouped.end(), order.begin() + batches.size() * batch, order.end());
  return grouped;
}

Batch MakeBatch(const std::vector<Sequence>& seqs, const std::vector<int64_t>& order,
                size_t begin, size_t end, int64_t pad_id, const torch::Device& device) {
  int64_t T = 0;
  bool packed = false;
  for (size_t i = begin; i < end; ++i) {
    T = std::max<int64_t>(T, static_cast<int64_t>(seqs[order[i]].ids.size()));
    packed = packed || !seqs[order[i]].lengths.empty();
  }
  const auto B = static_cast<int64_t>(end - begin);
  Batch batch;
  batch.ids = torch::full({B, T}, pad_id, torch::kInt64);
  batch.targets = torch::full({B, T}, kIgnore, torch::kInt64);
  auto ids = batch.ids.accessor<int64_t, 2>();
  auto targets = batch.targets.accessor<int64_t, 2>();
  torch::Tensor positions;
  std::vector<int64_t> spans;  // {row, start, length} of each packed sequence
  if (packed) positions = torch::zeros({B, T}, torch::kInt64);  // padding: position 0
  for (int64_t b = 0; b < B; ++b) {
    const Sequence& s = seqs[order[begin + b]];
    for (size_t t = 0; t < s.ids.size(); ++t) {
      ids[b][t] = s.ids[t];
      targets[b][t] = s.targets[t];
      if (s.targets[t] != kIgnore) ++batch.target_tokens;
    }
    if (!packed) continue;
    auto pos = positions.accessor<int64_t, 2>();
    int64_t t = 0;
    for (int64_t len : s.lengths.empty() ? std::vector<int64_t>{int64_t(s.ids.size())} : s.lengths) {
      spans.insert(spans.end(), {b, t, len});
      for (int64_t i = 0; i < len; ++i, ++t) pos[b][t] = i;
    }
  }
  batch.ids = batch.ids.to(device);
  batch.targets = batch.targets.to(device);
  if (packed) {
    const auto n = static_cast<int64_t>(spans.size() / 3);
    batch.packing = Packing{positions.to(device),
                            torch::tensor(spans, torch::kInt64).view({n, 3})};
  }
  return batch;
}

// Every example's sequences; counts the truncated ones.
std::vector<Sequence> TokenizeAll(const ModelFolder& m, const std::vector<Example>& examples,
                                  int64_t max_len, bool train_on_prompt, ChatTemplate chat,
                                  int64_t* truncated) {
  std::vector<Sequence> seqs;
  for (const Example& e : examples) {
    bool cut = false;
    for (Sequence& s : Tokenize(m, e, max_len, train_on_prompt, chat, &cut)) seqs.push_back(std::move(s));
    *truncated += cut;
  }
  return seqs;
}

}  // namespace tuneforge::engine
