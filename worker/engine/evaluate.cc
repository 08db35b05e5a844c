#include "worker/engine/evaluate.h"

#include <algorithm>
#include <cmath>

#include "common/utf8.h"
#include "worker/engine/ops.h"

namespace tuneforge::engine {

LossSums ComputeLoss(Transformer& model, const Batch& batch, bool count_correct) {
  torch::Tensor logits =
      model->forward(batch.ids, nullptr, batch.packing.positions.defined() ? &batch.packing : nullptr);  // (B, T, V)
  const int64_t V = logits.size(-1);
  torch::Tensor flat_logits = logits.view({-1, V});  // (B*T, V)
  torch::Tensor flat_targets = batch.targets.view({-1});  // (B*T)
  LossSums sums;
  sums.loss_sum = CrossEntropySum(flat_logits, flat_targets, kIgnore, model->compute().fused_kernels);
  if (count_correct) {
    torch::Tensor hits = (flat_logits.argmax(-1) == flat_targets) & (flat_targets != kIgnore);
    sums.correct = hits.sum().item<int64_t>();
  }
  return sums;
}

// The sums over the validation batches (longest sequences first: little
// padding) whose index modulo `shards` is `shard`.
EvalSums EvaluateShard(Transformer& model, const std::vector<Sequence>& seqs, int batch_size,
                       int64_t pad_id, const torch::Device& device, int shard, int shards) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<int64_t> order(seqs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return seqs[a].ids.size() > seqs[b].ids.size(); });
  EvalSums sums;
  for (size_t begin = size_t(shard) * batch_size; begin < order.size();
       begin += size_t(shards) * batch_size) {
    Batch batch =
        MakeBatch(seqs, order, begin, std::min(order.size(), begin + batch_size), pad_id, device);
    if (batch.target_tokens == 0) continue;
    LossSums batch_sums = ComputeLoss(model, batch, /*count_correct=*/true);
    sums.loss += batch_sums.loss_sum.item<double>();
    sums.correct += double(batch_sums.correct);
    sums.targets += double(batch.target_tokens);
  }
  model->train();
  return sums;
}

EvalMetrics ToMetrics(const EvalSums& sums) {
  EvalMetrics m;
  if (sums.targets > 0) {
    m.validation_loss = sums.loss / sums.targets;
    m.perplexity = std::exp(m.validation_loss);
    m.token_accuracy = sums.correct / sums.targets;
  }
  return m;
}

// A greedy completion of `prompt`, up to max_tokens, end-of-text or the chat
// template's end of turn, as valid UTF-8 (byte-level tokens may end
// mid-character, or be any bytes at all).
std::string Complete(ModelFolder& m, const std::vector<Segment>& prompt, ChatTemplate chat,
                     int max_tokens) {
  const int64_t context = MaxSequenceLength(m.model->config());
  std::vector<int64_t> ids = m.tokenizer->prefix_ids();
  EncodeSegments(*m.tokenizer, prompt, ids, nullptr);
  const int64_t keep = std::max<int64_t>(1, context - max_tokens);
  if (static_cast<int64_t>(ids.size()) > keep) ids.erase(ids.begin(), ids.end() - keep);
  if (ids.empty()) ids.push_back(m.stop_ids[0]);
  SamplingOptions greedy;
  greedy.max_new_tokens = max_tokens;
  greedy.stop_tokens = m.stop_ids;
  const std::vector<std::string> markers = ChatTemplateTokens(chat);
  if (!markers.empty()) greedy.stop_tokens.push_back(*m.tokenizer->TokenId(markers[0]));  // ends a turn
  return ToValidUtf8(m.tokenizer->Decode(Generate(m.model, ids, greedy), /*skip_special=*/true));
}

}  // namespace tuneforge::engine
