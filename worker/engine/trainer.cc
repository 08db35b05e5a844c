#include "worker/engine/trainer.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <torch/torch.h>
#include <torch/version.h>

#include "common/utf8.h"
#include "worker/engine/adamw.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/data_parallel.h"
#include "worker/engine/keep_freed_memory.h"
#include "worker/engine/lora.h"
#include "worker/engine/model_folder.h"
#include "worker/engine/ops.h"

namespace tuneforge::engine {
namespace {

constexpr int64_t kIgnore = -100;  // target id that carries no loss
using Clock = std::chrono::steady_clock;

// One tokenised sequence: ids[i] predicts targets[i]. (L) each. A packed
// row holds several: `lengths` are theirs, in order (empty: just one).
struct Sequence {
  std::vector<int64_t> ids;
  std::vector<int64_t> targets;
  std::vector<int64_t> lengths;
};

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

struct Batch {
  torch::Tensor ids;      // (B, T) int64, padded with the pad id
  torch::Tensor targets;  // (B, T) int64, padded with kIgnore
  Packing packing;        // defined for packed rows
  int64_t target_tokens = 0;
};

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

double LearningRateAt(int64_t step, int64_t total_steps, int64_t warmup, const TrainConfig& c) {
  if (warmup > 0 && step < warmup) return c.learning_rate * double(step + 1) / double(warmup);
  const double decay_steps = std::max<int64_t>(1, total_steps - warmup);
  const double progress = std::clamp(double(step - warmup) / decay_steps, 0.0, 1.0);
  if (c.schedule == "constant") return c.learning_rate;
  if (c.schedule == "linear") return c.learning_rate * (1.0 - progress);
  // cosine, to 10% of the peak
  const double min_lr = 0.1 * c.learning_rate;
  return min_lr + 0.5 * (c.learning_rate - min_lr) * (1.0 + std::cos(M_PI * progress));
}

// Sum of per-token cross-entropy over target tokens, and argmax hits.
struct LossSums {
  torch::Tensor loss_sum;  // () float
  int64_t correct = 0;
};

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

// Validation sums: loss over target tokens, argmax hits, target tokens.
struct EvalSums {
  double loss = 0;
  double correct = 0;
  double targets = 0;
};

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
    m.loss = sums.loss / sums.targets;
    m.perplexity = std::exp(m.loss);
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

int64_t MaxLength(const TrainConfig& config, const ModelConfig& model) {
  const int64_t limit = MaxSequenceLength(model);
  return config.max_seq_len > 0 ? std::min<int64_t>(config.max_seq_len, limit) : limit;
}

torch::Device ResolveDevice(const std::string& name) {
  const bool cuda = torch::cuda::is_available();
  if (name == "cuda" && !cuda) {
    throw std::invalid_argument("device cuda: libtorch " + LibtorchVersion() + " sees no CUDA device");
  }
  return name == "cuda" || (name == "auto" && cuda) ? torch::kCUDA : torch::kCPU;
}

// Puts the model on its device, in its precision; returns the device.
torch::Device SetUpCompute(const TrainConfig& c, Transformer& model, TrainPlan* plan) {
  const torch::Device device = ResolveDevice(c.device);
  model->to(device);
  ComputeOptions compute;
  const bool bf16 = c.precision == "bf16" || (c.precision == "auto" && device.is_cuda());
  compute.matmul_dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  compute.recompute_activations = c.recompute_activations;
  compute.fused_kernels = c.fused_kernels;
  model->SetCompute(compute);
  if (plan) {
    plan->device = device.is_cuda() ? "cuda" : "cpu";
    plan->precision = bf16 ? "bf16" : "fp32";
  }
  return device;
}

// Opens the base model named by config.model, or throws.
ModelFolder OpenBase(const TrainConfig& config) {
  std::string error;
  std::optional<ModelFolder> m = OpenModel(config.model, config.seed, &error);
  if (!m) throw std::invalid_argument(error);
  return std::move(*m);
}

}  // namespace

std::string LibtorchVersion() { return TORCH_VERSION; }

std::string DefaultDevice() { return torch::cuda::is_available() ? "cuda" : "cpu"; }

int AvailableCores() {
  int cores = 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = std::max(1, CPU_COUNT(&set));
  std::ifstream cpu_max("/sys/fs/cgroup/cpu.max");  // cgroup v2: "quota period"
  std::string quota;
  double period = 0;
  if (cpu_max >> quota >> period && quota != "max" && period > 0) {
    int limit = static_cast<int>(std::ceil(std::stod(quota) / period));
    cores = std::clamp(limit, 1, cores);
  }
  return cores;
}

std::string CheckConfig(const TrainConfig& c) {
  if (c.model.empty()) return "model is empty: name a preset or a model folder";
  if (std::string problem = CheckSettings(c); !problem.empty()) return problem;
  if (c.resume && c.checkpoint_dir.empty()) return "resume needs a checkpoint_dir";
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda") {
    return "device must be auto, cpu or cuda";
  }
  if (c.world_size < 1 || c.world_size > 4096) return "world_size must be in [1, 4096]";
  if (c.rank < 0 || c.rank >= c.world_size) return "rank must be in [0, world_size)";
  if (c.world_size > 1 && c.rendezvous.empty()) {
    return "a world_size above 1 needs a rendezvous (host:port of rank 0)";
  }
  if (c.rendezvous_timeout_seconds < 1) return "rendezvous_timeout_seconds must be >= 1";
  return "";
}

namespace {

// The settings a checkpoint must share with the run that resumes it: those
// training_settings.def marks kMustMatch, and what they resolve to (warmup
// steps, sequence length, chat template). A data-parallel run counts as one
// process accumulating every rank's micro-batches: the data positions are
// the same.
std::string Fingerprint(const TrainConfig& c, const TrainPlan& plan, int64_t max_len) {
  char text[256];
  std::snprintf(text, sizeof(text),
                "v2 sequences=%lld/%lld accum=%d warmup=%lld max_len=%lld params=%lld "
                "lora=%d/%.17g/%zu chat=%s ",
                static_cast<long long>(plan.train_sequences),
                static_cast<long long>(plan.validation_examples),
                c.gradient_accumulation_steps * c.world_size,
                static_cast<long long>(plan.warmup_steps), static_cast<long long>(max_len),
                static_cast<long long>(plan.parameter_count), c.lora.rank, c.lora.alpha,
                c.lora.targets.size(), plan.chat_template.c_str());
  return text + MustMatchText(c);
}

// The fingerprint checkpoints written before the settings table carry, so
// that a job checkpointed by an older worker resumes on a newer one.
std::string FingerprintV1(const TrainConfig& c, const TrainPlan& plan, int64_t max_len) {
  const int schedule = c.schedule == "linear" ? 1 : c.schedule == "constant" ? 2 : 0;
  char text[512];
  std::snprintf(text, sizeof(text),
                "sequences=%lld/%lld batch=%d accum=%d epochs=%d seed=%llu lr=%.17g warmup=%d "
                "schedule=%d wd=%.17g max_len=%lld clip=%.17g prompt=%d params=%lld "
                "lora=%d/%.17g/%zu chat=%s pack=%d group=%d",
                static_cast<long long>(plan.train_sequences),
                static_cast<long long>(plan.validation_examples), c.batch_size,
                c.gradient_accumulation_steps * c.world_size, c.epochs,
                static_cast<unsigned long long>(c.seed), c.learning_rate,
                static_cast<int>(plan.warmup_steps), schedule, c.weight_decay,
                static_cast<long long>(max_len), c.grad_clip, c.train_on_prompt ? 1 : 0,
                static_cast<long long>(plan.parameter_count), c.lora.rank, c.lora.alpha,
                c.lora.targets.size(), plan.chat_template.c_str(), c.packing ? 1 : 0,
                c.group_by_length ? 1 : 0);
  return text;
}

// Smooths the step loss (exponential average, 0.9) and throws when it has
// risen `factor` times above its lowest value and at least one nat.
void CheckDivergence(double step_loss, double factor, TrainerState& s) {
  s.smoothed_loss = s.smoothed_steps == 0 ? step_loss : 0.9 * s.smoothed_loss + 0.1 * step_loss;
  ++s.smoothed_steps;
  s.min_smoothed_loss = std::min(s.min_smoothed_loss, s.smoothed_loss);
  if (factor > 0 && s.smoothed_loss > factor * s.min_smoothed_loss &&
      s.smoothed_loss > s.min_smoothed_loss + 1.0) {
    char text[256];
    std::snprintf(text, sizeof(text),
                  "training diverged at step %lld: the smoothed loss %.4g is more than %g times "
                  "its lowest, %.4g; lower the learning rate or warm up longer",
                  static_cast<long long>(s.step + 1), s.smoothed_loss, factor,
                  s.min_smoothed_loss);
    throw std::runtime_error(text);
  }
}

// A hash (FNV-1a) of the sequences' tokens and targets, so data-parallel
// ranks can check they hold the same data.
std::string DataHash(const std::vector<Sequence>& train, const std::vector<Sequence>& validation) {
  uint64_t h = 14695981039346656037ULL;
  auto mix = [&](int64_t v) { h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ULL; };
  for (const std::vector<Sequence>* seqs : {&train, &validation}) {
    mix(static_cast<int64_t>(seqs->size()));
    for (const Sequence& seq : *seqs) {
      for (int64_t id : seq.ids) mix(id);
      for (int64_t t : seq.targets) mix(t);
      mix(-1);
    }
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(h));
  return text;
}

}  // namespace

TrainResult Train(const TrainConfig& config, const std::vector<Example>& train,
                  const std::vector<Example>& validation, TrainObserver& observer) {
  if (std::string problem = CheckConfig(config); !problem.empty()) {
    throw std::invalid_argument(problem);
  }
  if (train.empty()) throw std::invalid_argument("the training set is empty");

  KeepFreedMemory keep_freed_memory;
  const int threads = config.threads > 0 ? config.threads : AvailableCores();
  torch::set_num_threads(threads);
  torch::manual_seed(config.seed);

  // Data-parallel: rank 0 resumes, checkpoints and saves; the others
  // follow it.
  const bool leader = config.rank == 0;
  // Resuming: the newest checkpoint holds the model (and its tokenizer).
  const std::string resume_from = config.resume && leader && !config.checkpoint_dir.empty()
                                      ? LatestCheckpoint(config.checkpoint_dir)
                                      : "";
  // A LoRA run's checkpoints hold only the adapter: its base is config.model.
  const bool lora = config.lora.rank > 0;
  TrainerState state;
  ModelFolder base;
  if (resume_from.empty() || lora) {
    base = OpenBase(config);
    if (lora) EnableLora(base.model, config.lora);
  }
  if (!resume_from.empty()) {
    std::string error = ReadTrainerState(resume_from, &state);
    if (error.empty() && lora) {
      error = LoadAdapter(base.model, resume_from);
    } else if (error.empty()) {
      std::optional<ModelFolder> m = LoadModelFolder(resume_from, &error);
      if (m) base = std::move(*m);
    }
    if (!error.empty()) throw std::runtime_error("cannot resume from " + resume_from + ": " + error);
  }
  Transformer& model = base.model;
  model->train();
  const int64_t max_len = MaxLength(config, model->config());

  TrainPlan plan;
  const torch::Device device = SetUpCompute(config, model, &plan);
  const ChatTemplate chat = ResolveChatTemplate(config.chat_template, *base.tokenizer);
  plan.chat_template = std::string(ChatTemplateName(chat));
  plan.threads = threads;
  plan.parameter_count = 0;
  for (const auto& item : model->named_parameters()) {
    const bool adapter = item.key().find(".lora_") != std::string::npos;
    if (!adapter) plan.parameter_count += item.value().numel();
    if (item.value().requires_grad()) plan.trainable_parameters += item.value().numel();
  }
  std::vector<Sequence> train_seqs = TokenizeAll(base, train, max_len, config.train_on_prompt,
                                                 chat, &plan.truncated_examples);
  std::vector<Sequence> val_seqs = TokenizeAll(base, validation, max_len, config.train_on_prompt,
                                               chat, &plan.truncated_examples);
  plan.train_examples = static_cast<int64_t>(train.size());
  plan.validation_examples = static_cast<int64_t>(validation.size());
  plan.train_sequences = static_cast<int64_t>(train_seqs.size());
  if (config.packing) {  // packed once, in an order from the seed; rows shuffle per epoch
    std::vector<int64_t> order(train_seqs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    DeterministicShuffle(order, config.seed);
    train_seqs = Pack(train_seqs, order, max_len);
    plan.packed_rows = static_cast<int64_t>(train_seqs.size());
  }
  const int64_t rows = static_cast<int64_t>(train_seqs.size());
  std::vector<int64_t> row_targets(rows);  // target tokens of each row
  for (int64_t i = 0; i < rows; ++i) {
    row_targets[i] = std::count_if(train_seqs[i].targets.begin(), train_seqs[i].targets.end(),
                                   [](int64_t t) { return t != kIgnore; });
  }
  const int64_t micro_per_epoch = (rows + config.batch_size - 1) / config.batch_size;
  // An optimizer step's micro-batches, over every rank: micro-batch j of a
  // step is rank j % world_size's.
  const int64_t micro_per_step = int64_t(config.gradient_accumulation_steps) * config.world_size;
  plan.steps_per_epoch = (micro_per_epoch + micro_per_step - 1) / micro_per_step;
  plan.total_steps = plan.steps_per_epoch * config.epochs;
  plan.warmup_steps = config.warmup_steps > 0
                          ? config.warmup_steps
                          : static_cast<int64_t>(std::ceil(config.warmup_ratio * double(plan.total_steps)));
  plan.resumed_from_step = state.step;
  const std::string fingerprint = Fingerprint(config, plan, max_len);
  if (!resume_from.empty() && state.fingerprint != fingerprint &&
      state.fingerprint != FingerprintV1(config, plan, max_len)) {
    throw std::invalid_argument("checkpoint " + resume_from + " was made by a run with other "
                                "settings or data (" + state.fingerprint + "; now " +
                                fingerprint + "); resume with the same ones or start afresh");
  }
  state.fingerprint = fingerprint;
  std::unique_ptr<DataParallel> group;
  if (config.world_size > 1) {
    group = std::make_unique<DataParallel>(DataParallelOptions{
        config.world_size, config.rank, config.rendezvous, config.rendezvous_timeout_seconds});
    group->CheckSame("settings and data",
                     fingerprint + " data=" + DataHash(train_seqs, val_seqs));
    if (std::string error = ParseTrainerState(group->Broadcast(TrainerStateJson(state)), &state);
        !error.empty()) {
      throw std::runtime_error("rank 0's trainer state: " + error);
    }
    plan.resumed_from_step = state.step;
  }
  plan.resumed_tokens_seen = state.tokens_seen;
  observer.OnStart(plan);

  // AdamW; no weight decay on biases and norms (every 1-D parameter).
  std::vector<AdamW::Param> params;  // the trainable ones: all, or the adapters
  std::vector<torch::Tensor> trainable;
  for (const auto& item : model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    params.push_back({item.key(), item.value(), item.value().dim() >= 2});
    trainable.push_back(item.value());
  }
  AdamW::Options adam;
  adam.weight_decay = config.weight_decay;
  adam.fused = config.fused_kernels;
  AdamW optimizer(std::move(params), adam);
  if (!resume_from.empty()) {
    if (std::string error = LoadOptimizerState(resume_from, optimizer); !error.empty()) {
      throw std::runtime_error("cannot resume: " + error);
    }
  }
  if (group) {  // every rank starts from rank 0's weights and moments
    std::map<std::string, torch::Tensor> moments = optimizer.State();
    std::vector<torch::Tensor> tensors = trainable;
    for (const auto& [name, t] : moments) tensors.push_back(t);
    group->Broadcast(tensors);
    optimizer.LoadState(moments);
  }
  // A checkpoint that ends an epoch resumes at the next one.
  if (state.epoch_step >= plan.steps_per_epoch) {
    ++state.epoch;
    state.epoch_step = 0;
  }

  TrainResult result;
  int64_t last_checkpoint = state.step;
  auto checkpoint = [&]() {
    if (config.checkpoint_dir.empty() || !leader) return;
    if (std::string error = SaveCheckpoint(config.checkpoint_dir, base, optimizer, state,
                                           lora ? &config.lora : nullptr);
        !error.empty()) {
      throw std::runtime_error("cannot save a checkpoint: " + error);
    }
    last_checkpoint = state.step;
    PruneCheckpoints(config.checkpoint_dir, config.keep_checkpoints, state.best_step);
    observer.OnCheckpoint(state.step, state.epoch,
                          config.checkpoint_dir + "/" + CheckpointName(state.step),
                          state.best_step == state.step);
  };
  // Evaluates; returns true when early stopping ends the run.
  auto evaluate = [&](int epoch) {
    if (val_seqs.empty()) return false;
    EvalSums sums = EvaluateShard(model, val_seqs, config.batch_size, base.pad_id, device,
                                  config.rank, config.world_size);
    if (group) {
      const std::vector<double> total = group->Sum({sums.loss, sums.correct, sums.targets});
      sums = {total[0], total[1], total[2]};
    }
    EvalMetrics m = ToMetrics(sums);
    m.epoch = epoch;
    m.step = state.step;
    state.last_eval_loss = m.loss;
    observer.OnEvaluation(m);
    int samples = 0;
    for (const Example& e : validation) {
      if (samples == config.sample_count || !leader) break;
      const std::vector<Segment> prompt = GenerationPrompt(e, chat);
      if (prompt.empty()) continue;  // text documents have nothing to complete
      observer.OnSample(JoinText(prompt), Complete(base, prompt, chat, config.sample_max_tokens),
                        state.step);
      ++samples;
    }
    if (m.loss < state.best_loss) {
      state.best_loss = m.loss;
      state.best_step = state.step;
    }
    if (m.loss < state.improved_loss - config.early_stopping_min_delta) {
      state.improved_loss = m.loss;
      state.evals_without_improvement = 0;
    } else {
      ++state.evals_without_improvement;
    }
    if (config.early_stopping_patience > 0 &&
        state.evals_without_improvement >= config.early_stopping_patience) {
      char reason[256];
      std::snprintf(reason, sizeof(reason),
                    "early stopping: validation loss did not improve by %g in %d evaluations "
                    "(best %.4f at step %lld)",
                    config.early_stopping_min_delta, state.evals_without_improvement,
                    state.best_loss,
                    static_cast<long long>(state.best_step));
      result.stop_reason = reason;
      return true;
    }
    return false;
  };

  bool early = false;
  for (; state.epoch <= config.epochs && !early; ++state.epoch, state.epoch_step = 0) {
    const int epoch = state.epoch;
    const std::vector<int64_t> order = EpochOrder(train_seqs, config, epoch);
    for (; state.epoch_step < plan.steps_per_epoch; ++state.epoch_step) {
      bool stop = observer.ShouldStop();
      if (group) {
        stop = group->Sum({stop ? 1.0 : 0.0})[0] > 0;  // any rank's stop stops them all
        // Dropout draws from a stream of the rank and the step, so a
        // resumed rank continues as it would have.
        torch::manual_seed(config.seed + 1000003ULL * uint64_t(state.step + 1) +
                           7919ULL * uint64_t(config.rank));
      }
      if (stop) {
        if (config.checkpoint_on_stop && state.step > last_checkpoint) checkpoint();
        result.stopped = true;
        result.steps = state.step;
        return result;
      }
      const auto started = Clock::now();
      const double lr = LearningRateAt(state.step, plan.total_steps, plan.warmup_steps, config);

      std::vector<Batch> micro;  // this rank's
      int64_t step_targets = 0, step_tokens = 0;  // of the step on every rank
      for (int64_t j = 0; j < micro_per_step; ++j) {
        const size_t begin =
            (state.epoch_step * micro_per_step + j) * static_cast<size_t>(config.batch_size);
        if (begin >= order.size()) break;
        const size_t end = std::min(order.size(), begin + config.batch_size);
        for (size_t i = begin; i < end; ++i) {
          step_targets += row_targets[order[i]];
          step_tokens += static_cast<int64_t>(train_seqs[order[i]].ids.size());
        }
        if (j % config.world_size != config.rank) continue;
        micro.push_back(MakeBatch(train_seqs, order, begin, end, base.pad_id, device));
      }
      optimizer.ZeroGrad();
      double step_loss_sum = 0;
      for (const Batch& batch : micro) {
        if (batch.target_tokens == 0) continue;
        torch::Tensor loss_sum = ComputeLoss(model, batch, false).loss_sum;
        (loss_sum / double(step_targets)).backward();
        step_loss_sum += loss_sum.item<double>();
      }
      if (group && step_targets > 0) {  // sum every rank's gradients and losses
        std::vector<torch::Tensor> grads;
        for (torch::Tensor& p : trainable) {
          if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
          grads.push_back(p.grad());
        }
        group->SumInPlace(grads);
        step_loss_sum = group->Sum({step_loss_sum})[0];
      }
      double grad_norm = 0;
      if (step_targets > 0) {
        const double step_loss = step_loss_sum / double(step_targets);
        if (!std::isfinite(step_loss)) {
          throw std::runtime_error("training loss became non-finite at step " +
                                   std::to_string(state.step + 1) +
                                   "; lower the learning rate or check the data");
        }
        CheckDivergence(step_loss, config.divergence_factor, state);
        grad_norm = optimizer.GradNorm();
        // Clipping as torch.nn.utils.clip_grad_norm_ does it, folded into the update.
        const double clip = config.grad_clip / (grad_norm + 1e-6);
        optimizer.Step(lr, config.grad_clip > 0 && clip < 1 ? clip : 1.0);
      }
      ++state.step;
      state.tokens_seen += step_tokens;
      state.window_loss += step_loss_sum;
      state.window_targets += step_targets;
      state.window_tokens += step_tokens;
      const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
      state.window_seconds += seconds;
      state.train_seconds += seconds;

      const bool epoch_end = state.epoch_step + 1 == plan.steps_per_epoch;
      if (state.step % config.log_every_steps == 0 || epoch_end) {
        StepMetrics m;
        m.epoch = epoch;
        m.step = state.step;
        m.total_steps = plan.total_steps;
        m.loss = state.window_targets > 0 ? state.window_loss / double(state.window_targets) : 0;
        m.learning_rate = lr;
        m.grad_norm = grad_norm;
        m.tokens_per_second =
            state.window_seconds > 0 ? state.window_tokens / state.window_seconds : 0;
        m.tokens_seen = state.tokens_seen;
        m.epoch_progress = double(state.epoch_step + 1) / double(plan.steps_per_epoch);
        m.eta_seconds = state.train_seconds / double(state.step - plan.resumed_from_step) *
                        double(plan.total_steps - state.step);
        observer.OnMetrics(m);
        state.last_loss = m.loss;
        state.window_loss = 0;
        state.window_targets = 0;
        state.window_tokens = 0;
        state.window_seconds = 0;
      }
      if (epoch_end) {
        state.epoch_step = plan.steps_per_epoch;  // the position a checkpoint records
        early = evaluate(epoch);
        checkpoint();
        break;
      }
      bool save = config.checkpoint_every_steps > 0 && state.step % config.checkpoint_every_steps == 0;
      if (config.eval_every_steps > 0 && state.step % config.eval_every_steps == 0) {
        early = evaluate(epoch);
        save = save || early || state.best_step == state.step;  // keep every new best
      }
      if (save) {
        ++state.epoch_step;  // this step is done: resume at the next
        checkpoint();
        --state.epoch_step;
      }
      if (early) break;
    }
  }
  result.steps = state.step;
  result.final_train_loss = state.last_loss;
  result.final_validation_loss = state.last_eval_loss;
  result.best_step = state.best_step;
  result.best_validation_loss = std::isfinite(state.best_loss) ? state.best_loss : 0;
  if (!config.output_dir.empty() && leader) {
    // After early stopping, the best checkpoint's weights are the result.
    const std::string best = config.checkpoint_dir + "/" + CheckpointName(state.best_step);
    std::string error;
    if (!result.stop_reason.empty() && !config.checkpoint_dir.empty() &&
        std::filesystem::exists(best)) {
      if (lora) {
        error = LoadAdapter(model, best);
      } else if (std::optional<ModelFolder> m = LoadModelFolder(best, &error)) {
        base.model = m->model;
      }
      if (!error.empty()) throw std::runtime_error("cannot load the best checkpoint: " + error);
    }
    if (lora) {
      error = SaveAdapter(base.model, config.lora, config.model, config.output_dir + "/adapter");
      if (!error.empty()) throw std::runtime_error("cannot save the adapter: " + error);
      MergeLora(base.model);
    }
    error = SaveModelFolder(base, config.output_dir);
    if (!error.empty()) throw std::runtime_error("cannot save the model: " + error);
  }
  return result;
}

EvalMetrics EvaluateModel(const TrainConfig& config, const std::vector<Example>& examples,
                          int64_t* truncated) {
  if (std::string problem = CheckConfig(config); !problem.empty()) {
    throw std::invalid_argument(problem);
  }
  torch::set_num_threads(config.threads > 0 ? config.threads : AvailableCores());
  ModelFolder m = OpenBase(config);
  const torch::Device device = SetUpCompute(config, m.model, nullptr);
  const ChatTemplate chat = ResolveChatTemplate(config.chat_template, *m.tokenizer);
  *truncated = 0;
  std::vector<Sequence> seqs = TokenizeAll(m, examples, MaxLength(config, m.model->config()),
                                           config.train_on_prompt, chat, truncated);
  return ToMetrics(EvaluateShard(m.model, seqs, config.batch_size, m.pad_id, device, 0, 1));
}

}  // namespace tuneforge::engine
