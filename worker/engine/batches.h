// From examples to batches: tokenising examples (with the model's chat
// template) into sequences, packing them into rows, the order of an epoch
// (shuffled, grouped by length), and padded batches as tensors.
//
//   std::vector<Sequence> seqs = TokenizeAll(model, examples, max_len, false, chat, &cut);
//   std::vector<int64_t> order = EpochOrder(seqs, config, epoch);
//   Batch b = MakeBatch(seqs, order, 0, 8, model.pad_id, torch::kCPU);  // (8, T)
//
// Dimensions: B batch, T time (tokens per row). Plain functions; no state.
#ifndef TUNEFORGE_WORKER_ENGINE_BATCHES_H_
#define TUNEFORGE_WORKER_ENGINE_BATCHES_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/dataset.h"
#include "text/bpe_tokenizer.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/transformer.h"
#include "worker/engine/trainer.h"

namespace tuneforge::engine {

constexpr int64_t kIgnore = -100;  // target id that carries no loss

// One tokenised sequence: ids[i] predicts targets[i]. (L) each. A packed
// row holds several: `lengths` are theirs, in order (empty: just one).
struct Sequence {
  std::vector<int64_t> ids;
  std::vector<int64_t> targets;
  std::vector<int64_t> lengths;
};

// The chat template `name` names ("auto": the one whose special tokens the
// tokenizer has), or throws saying which token is missing.
ChatTemplate ResolveChatTemplate(const std::string& name, const BpeTokenizer& tokenizer);

// Appends the tokens of `segments` (and, if `trained` is given, whether each
// carries loss): special ones as their single token, text ordinarily.
void EncodeSegments(const BpeTokenizer& tokenizer, const std::vector<Segment>& segments,
                    std::vector<int64_t>& tokens, std::vector<bool>* trained);

// Every example's sequences of at most max_len tokens; counts the truncated.
std::vector<Sequence> TokenizeAll(const ModelFolder& m, const std::vector<Example>& examples,
                                  int64_t max_len, bool train_on_prompt, ChatTemplate chat,
                                  int64_t* truncated);

// Packs sequences, in `order`, into rows of at most max_len tokens.
std::vector<Sequence> Pack(const std::vector<Sequence>& seqs, const std::vector<int64_t>& order,
                           int64_t max_len);

// The order of the sequences in epoch `epoch` (from the seed; grouped by
// length unless c.group_by_length is off).
std::vector<int64_t> EpochOrder(const std::vector<Sequence>& seqs, const TrainConfig& c,
                                int epoch);

struct Batch {
  torch::Tensor ids;      // (B, T) int64, padded with the pad id
  torch::Tensor targets;  // (B, T) int64, padded with kIgnore
  Packing packing;        // defined for packed rows
  int64_t target_tokens = 0;
};

// The batch of seqs[order[begin..end)], padded to its longest (or packed
// rows), on `device`.
Batch MakeBatch(const std::vector<Sequence>& seqs, const std::vector<int64_t>& order,
                size_t begin, size_t end, int64_t pad_id, const torch::Device& device);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_BATCHES_H_
