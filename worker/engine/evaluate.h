// The loss of a batch, evaluation on the validation set (sharded across
// data-parallel ranks), and the greedy sample completions shown at every
// evaluation.
#ifndef TUNEFORGE_WORKER_ENGINE_EVALUATE_H_
#define TUNEFORGE_WORKER_ENGINE_EVALUATE_H_

#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/engine/batches.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/transformer.h"

namespace tuneforge::engine {

// Sum of per-token cross-entropy over target tokens, and argmax hits.
struct LossSums {
  torch::Tensor loss_sum;  // () float
  int64_t correct = 0;
};

// The batch's loss sum (and, if asked, argmax hits over its targets).
LossSums ComputeLoss(Transformer& model, const Batch& batch, bool count_correct);

// Validation sums: loss over target tokens, argmax hits, target tokens.
struct EvalSums {
  double loss = 0;
  double correct = 0;
  double targets = 0;
};

// The sums over the validation batches (longest sequences first: little
// padding) whose index modulo `shards` is `shard`.
EvalSums EvaluateShard(Transformer& model, const std::vector<Sequence>& seqs, int batch_size,
                       int64_t pad_id, const torch::Device& device, int shard, int shards);

// Mean loss, perplexity and token accuracy from the sums.
EvalMetrics ToMetrics(const EvalSums& sums);

// A greedy completion of `prompt`, up to max_tokens, end-of-text or the chat
// template's end of turn, as valid UTF-8.
std::string Complete(ModelFolder& m, const std::vector<Segment>& prompt, ChatTemplate chat,
                     int max_tokens);

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_EVALUATE_H_
