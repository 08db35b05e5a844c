// The shape of a decoder-only transformer, read from and written to a Hugging
// Face `config.json`, and the built-in presets. No libtorch include: the
// scheduler reads imported models' configs and lists the presets with it.
//
//   absl::StatusOr<ModelConfig> c = ParseHfConfig(config_json_text);
//   if (!c.ok()) ... c.status() names the unsupported model_type or option ...
//
// Supported model types: "gpt2" (learned positions, LayerNorm, GELU, fused
// QKV) and the Llama family "llama", "mistral", "qwen2" (RMSNorm, rotary
// embeddings, SwiGLU, grouped-query attention, optional QKV bias).
//
// Thread-safe: pure functions over values.
#ifndef TUNEFORGE_COMMON_MODEL_CONFIG_H_
#define TUNEFORGE_COMMON_MODEL_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tuneforge {

enum class Architecture { kGpt2, kLlama };

struct ModelConfig {
  Architecture architecture = Architecture::kGpt2;
  std::string model_type = "gpt2";  // as config.json says: gpt2, llama, mistral, qwen2
  int64_t vocab_size = 258;         // e.g. 258 for the presets' byte vocabulary
  int64_t context_length = 256;     // longest sequence, e.g. 256
  int64_t n_layer = 4;              // transformer blocks, e.g. 4
  int64_t n_head = 4;               // query heads, e.g. 4
  int64_t n_kv_head = 4;            // key/value heads (grouped-query attention); divides n_head
  int64_t d_model = 128;            // channels, e.g. 128
  int64_t head_dim = 32;            // channels per head, e.g. d_model / n_head
  int64_t d_ff = 512;               // MLP hidden width, e.g. 4 * d_model (GPT-2)
  double norm_eps = 1e-5;           // LayerNorm / RMSNorm epsilon
  double rope_theta = 10000.0;      // Llama: rotary base
  // Llama 3.1's "llama3" rope scaling; factor 0 means none.
  double rope_factor = 0, rope_low_freq_factor = 1, rope_high_freq_factor = 4;
  int64_t rope_original_context = 8192;
  bool tie_embeddings = true;       // the output head is the token embedding
  bool qkv_bias = true;             // biases on Q, K, V: GPT-2, Qwen2; Llama if attention_bias
  bool o_bias = true;               // bias on the output projection: GPT-2; Llama if attention_bias
  int64_t sliding_window = 0;       // Mistral: attention span; 0: the whole context
  double dropout = 0.0;             // e.g. 0.0 (fine-tuning usually needs none)
  int64_t bos_token_id = -1;        // -1: none
  std::vector<int64_t> eos_token_ids;  // generation stops at any of these
};

// Reads a config.json's text; INVALID_ARGUMENT naming the unsupported
// model_type, option or out-of-range size.
absl::StatusOr<ModelConfig> ParseHfConfig(const std::string& text);

// config.json text for `c` (float32 weights).
std::string HfConfigJson(const ModelConfig& c);

// Weights of the model, counted from the shape (a tied head counts once).
int64_t ParameterCount(const ModelConfig& c);

// Every weight tensor of the model as Hugging Face names and lays it out in
// safetensors (GPT-2's Conv1D weights are (in, out)): name -> shape.
std::map<std::string, std::vector<int64_t>> ExpectedTensors(const ModelConfig& c);

// The name ExpectedTensors() gives a folder's tensor: original GPT-2 files
// name theirs without the "transformer." prefix.
std::string CanonicalTensorName(const std::string& name, const ModelConfig& c);

// Tensors a Hub folder may hold that are not weights: GPT-2's attention-mask
// buffers, old Llama checkpoints' rotary frequencies, a tied head's copy.
bool IsIgnorableTensor(const std::string& name, const ModelConfig& c);

// The longest sequence the model attends over in full: the context length,
// or Mistral's sliding window when that is shorter.
int64_t MaxSequenceLength(const ModelConfig& c);

// "gpt2" or "llama".
const char* ArchitectureName(Architecture a);

// Whether `name` is a file a model folder may hold (config, weights, shards,
// index, tokenizer and generation files): a plain name, never a path.
bool IsModelFileName(const std::string& name);
// The largest a model file of this name may be: its parser reads it whole
// into memory, so configs and tokenizers have bounds of their own (1 MiB;
// 32 MiB for tokenizers and the shard index, several times the largest
// real ones). 0 for weights, bounded only by the model's size limit.
int64_t MaxModelFileBytes(const std::string& name);

// LoRA targets are projection names matched as suffixes on a "." boundary
// (as PEFT matches them): whether `target` names a projection of the family
// ("gpt2" or "llama"), e.g. "q_proj", "mlp.down_proj", "c_attn".
bool IsLoraTarget(const std::string& architecture, const std::string& target);
// The family's projections, for error messages: "attn.c_attn, attn.c_proj, ...".
std::string LoraTargetsOf(const std::string& architecture);

struct Preset {
  std::string name;         // e.g. "tiny-gpt2"
  std::string description;
  ModelConfig config;
};

// tiny-gpt2, tiny-llama: under 1M parameters, for tests and the demo.
// small-gpt2, small-llama: ~25M parameters (d_model 512), for benchmarks.
// Each is random from the job's seed, with a byte-level vocabulary (256
// bytes, end-of-text, padding), and is written as a Hugging Face folder.
const std::vector<Preset>& Presets();
const Preset* FindPreset(const std::string& name);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_MODEL_CONFIG_H_
