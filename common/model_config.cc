#include "common/model_config.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace tuneforge {
namespace {

using json = nlohmann::json;

// Thrown inside ParseHfConfig for an unsupported option; caught there.
struct Unsupported {
  std::string what;
};

int64_t Int(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_integer()) {
    throw Unsupported{std::string(key) + " is missing or not an integer"};
  }
  return j[key].get<int64_t>();
}

int64_t IntOr(const json& j, const char* key, int64_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return Int(j, key);
}

double NumberOr(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) throw Unsupported{std::string(key) + " is not a number"};
  return j[key].get<double>();
}

bool BoolOr(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) throw Unsupported{std::string(key) + " is not true or false"};
  return j[key].get<bool>();
}

std::string StringOr(const json& j, const char* key, const std::string& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw Unsupported{std::string(key) + " is not a string"};
  return j[key].get<std::string>();
}

// eos_token_id is an integer or a list of them (Llama 3 instruct models).
std::vector<int64_t> TokenIds(const json& j, const char* key) {
  std::vector<int64_t> ids;
  if (!j.contains(key) || j[key].is_null()) return ids;
  const json& v = j[key];
  if (v.is_number_integer()) return {v.get<int64_t>()};
  if (!v.is_array()) throw Unsupported{std::string(key) + " is not an integer or a list"};
  for (const json& id : v) {
    if (!id.is_number_integer()) throw Unsupported{std::string(key) + " holds a non-integer"};
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

void ReadGpt2(const json& j, ModelConfig& c) {
  c.architecture = Architecture::kGpt2;
  c.vocab_size = Int(j, "vocab_size");
  c.context_length = IntOr(j, "n_positions", IntOr(j, "n_ctx", 1024));
  c.d_model = Int(j, "n_embd");
  c.n_layer = Int(j, "n_layer");
  c.n_head = Int(j, "n_head");
  c.n_kv_head = c.n_head;
  c.head_dim = c.n_head > 0 ? c.d_model / c.n_head : 0;
  c.d_ff = IntOr(j, "n_inner", 4 * c.d_model);
  c.norm_eps = NumberOr(j, "layer_norm_epsilon", 1e-5);
  c.qkv_bias = c.o_bias = true;
  c.tie_embeddings = BoolOr(j, "tie_word_embeddings", true);
  const std::string act = StringOr(j, "activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
    throw Unsupported{"activation_function \"" + act + "\" (gelu_new is supported)"};
  }
  if (!c.tie_embeddings) throw Unsupported{"tie_word_embeddings false for gpt2"};
  if (BoolOr(j, "scale_attn_by_inverse_layer_idx", false) ||
      BoolOr(j, "reorder_and_upcast_attn", false) || !BoolOr(j, "scale_attn_weights", true)) {
    throw Unsupported{"attention scaling other than GPT-2's standard one"};
  }
  if (c.n_head > 0 && c.d_model % c.n_head != 0) throw Unsupported{"n_embd not divisible by n_head"};
}

void ReadLlama(const json& j, ModelConfig& c) {
  c.architecture = Architecture::kLlama;
  c.vocab_size = Int(j, "vocab_size");
  c.context_length = Int(j, "max_position_embeddings");
  c.d_model = Int(j, "hidden_size");
  c.n_layer = Int(j, "num_hidden_layers");
  c.n_head = Int(j, "num_attention_heads");
  c.n_kv_head = IntOr(j, "num_key_value_heads", c.n_head);
  c.head_dim = IntOr(j, "head_dim", c.n_head > 0 ? c.d_model / c.n_head : 0);
  c.d_ff = Int(j, "intermediate_size");
  c.norm_eps = NumberOr(j, "rms_norm_eps", 1e-6);
  c.rope_theta = NumberOr(j, "rope_theta", 10000.0);
  c.tie_embeddings = BoolOr(j, "tie_word_embeddings", false);
  const bool attention_bias = BoolOr(j, "attention_bias", false);
  c.qkv_bias = c.model_type == "qwen2" || attention_bias;  // Qwen2 always has Q/K/V biases
  c.o_bias = c.model_type != "qwen2" && attention_bias;
  if (BoolOr(j, "mlp_bias", false)) throw Unsupported{"mlp_bias true"};
  const std::string act = StringOr(j, "hidden_act", "silu");
  if (act != "silu") throw Unsupported{"hidden_act \"" + act + "\" (silu is supported)"};
  if (c.model_type == "mistral") {
    c.sliding_window = IntOr(j, "sliding_window", 0);
  } else if (c.model_type == "qwen2" && BoolOr(j, "use_sliding_window", false)) {
    throw Unsupported{"use_sliding_window true"};
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& s = j["rope_scaling"];
    if (!s.is_object()) throw Unsupported{"rope_scaling is not an object"};
    const std::string type = StringOr(s, "rope_type", StringOr(s, "type", ""));
    if (type == "default") {
      // no scaling
    } else if (type == "llama3") {
      c.rope_factor = NumberOr(s, "factor", 0);
      c.rope_low_freq_factor = NumberOr(s, "low_freq_factor", 1);
      c.rope_high_freq_factor = NumberOr(s, "high_freq_factor", 4);
      c.rope_original_context = IntOr(s, "original_max_position_embeddings", 8192);
      if (!(c.rope_factor > 0) || !(c.rope_high_freq_factor > c.rope_low_freq_factor) ||
          c.rope_original_context <= 0) {
        throw Unsupported{"rope_scaling llama3 with factors out of range"};
      }
    } else {
      throw Unsupported{"rope_scaling type \"" + type + "\" (llama3 is supported)"};
    }
  }
  if (c.n_kv_head <= 0 || (c.n_head > 0 && c.n_head % c.n_kv_head != 0)) {
    throw Unsupported{"num_key_value_heads that does not divide num_attention_heads"};
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) throw Unsupported{"an odd or zero head_dim"};
}

bool InRange(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

}  // namespace

const char* ArchitectureName(Architecture a) {
  return a == Architecture::kGpt2 ? "gpt2" : "llama";
}

absl::StatusOr<ModelConfig> ParseHfConfig(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  ModelConfig c;
  try {
    c.model_type = StringOr(j, "model_type", "");
    if (c.model_type == "gpt2") {
      ReadGpt2(j, c);
    } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
      ReadLlama(j, c);
    } else {
      throw Unsupported{"model_type \"" + c.model_type +
                        "\" (supported: gpt2, llama, mistral, qwen2)"};
    }
    c.bos_token_id = IntOr(j, "bos_token_id", -1);
    c.eos_token_ids = TokenIds(j, "eos_token_id");
  } catch (const Unsupported& u) {
    return absl::InvalidArgumentError("config.json: unsupported " + u.what);
  }
  if (!InRange(c.vocab_size, 1, 1 << 22) || !InRange(c.context_length, 1, 1 << 21) ||
      !InRange(c.n_layer, 1, 1024) || !InRange(c.n_head, 1, 1024) ||
      !InRange(c.d_model, 1, 1 << 16) || !InRange(c.head_dim, 1, 1 << 12) ||
      !InRange(c.d_ff, 1, 1 << 20) || c.sliding_window < 0 || !(c.norm_eps > 0) ||
      !(c.rope_theta > 0)) {
    return absl::InvalidArgumentError(
        "config.json: a size out of range (vocab_size, context, layers, heads, widths)");
  }
  for (int64_t id : c.eos_token_ids) {
    if (!InRange(id, 0, c.vocab_size - 1)) {
      return absl::InvalidArgumentError("config.json: eos_token_id " + std::to_string(id) +
                                        " is outside the vocabulary");
    }
  }
  if (c.bos_token_id >= c.vocab_size) {
    return absl::InvalidArgumentError("config.json: bos_token_id is outside the vocabulary");
  }
  return c;
}

std::string HfConfigJson(const ModelConfig& c) {
  json eos = c.eos_token_ids.size() == 1 ? json(c.eos_token_ids[0]) : json(c.eos_token_ids);
  json bos = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  json j;
  if (c.architecture == Architecture::kGpt2) {
    j = {{"architectures", {"GPT2LMHeadModel"}},
         {"model_type", "gpt2"},
         {"vocab_size", c.vocab_size},
         {"n_positions", c.context_length},
         {"n_ctx", c.context_length},
         {"n_embd", c.d_model},
         {"n_layer", c.n_layer},
         {"n_head", c.n_head},
         {"n_inner", c.d_ff},
         {"activation_function", "gelu_new"},
         {"layer_norm_epsilon", c.norm_eps},
         {"resid_pdrop", c.dropout},
         {"embd_pdrop", c.dropout},
         {"attn_pdrop", c.dropout},
         {"initializer_range", 0.02},
         {"tie_word_embeddings", true}};
  } else {
    const char* arch = c.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                       : c.model_type == "mistral" ? "MistralForCausalLM"
                                                   : "LlamaForCausalLM";
    j = {{"architectures", {arch}},
         {"model_type", c.model_type},
         {"vocab_size", c.vocab_size},
         {"max_position_embeddings", c.context_length},
         {"hidden_size", c.d_model},
         {"intermediate_size", c.d_ff},
         {"num_hidden_layers", c.n_layer},
         {"num_attention_heads", c.n_head},
         {"num_key_value_heads", c.n_kv_head},
         {"head_dim", c.head_dim},
         {"hidden_act", "silu"},
         {"rms_norm_eps", c.norm_eps},
         {"rope_theta", c.rope_theta},
         {"rope_scaling", nullptr},
         {"attention_dropout", c.dropout},
         {"initializer_range", 0.02},
         {"tie_word_embeddings", c.tie_embeddings}};
    if (c.model_type != "qwen2") {
      j["attention_bias"] = c.qkv_bias;
      j["mlp_bias"] = false;
    }
    if (c.model_type == "mistral") {
      j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    }
    if (c.rope_factor > 0) {
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_factor},
                           {"low_freq_factor", c.rope_low_freq_factor},
                           {"high_freq_factor", c.rope_high_freq_factor},
                           {"original_max_position_embeddings", c.rope_original_context}};
    }
  }
  j["bos_token_id"] = bos;
  j["eos_token_id"] = eos;
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

int64_t ParameterCount(const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff, L = c.n_layer;
  const int64_t head = c.tie_embeddings ? 0 : V * C;
  if (c.architecture == Architecture::kGpt2) {
    // Per block: two LayerNorms, fused QKV, projection, MLP, each with biases.
    const int64_t block = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C);
    return V * C + c.context_length * C + L * block + 2 * C + head;
  }
  const int64_t q = c.n_head * c.head_dim, kv = c.n_kv_head * c.head_dim;
  const int64_t attention = C * q + 2 * C * kv + q * C + (c.qkv_bias ? q + 2 * kv : 0) +
                            (c.o_bias ? C : 0);
  const int64_t block = 2 * C + attention + 3 * C * F;
  return V * C + L * block + C + head;
}

std::map<std::string, std::vector<int64_t>> ExpectedTensors(const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff;
  std::map<std::string, std::vector<int64_t>> t;
  if (c.architecture == Architecture::kGpt2) {
    t["transformer.wte.weight"] = {V, C};
    t["transformer.wpe.weight"] = {c.context_length, C};
    for (int64_t i = 0; i < c.n_layer; ++i) {
      const std::string p = "transformer.h." + std::to_string(i) + ".";
      for (const char* norm : {"ln_1.", "ln_2."}) {
        t[p + norm + "weight"] = {C};
        t[p + norm + "bias"] = {C};
      }
      t[p + "attn.c_attn.weight"] = {C, 3 * C};  // Conv1D: (in, out)
      t[p + "attn.c_attn.bias"] = {3 * C};
      t[p + "attn.c_proj.weight"] = {C, C};
      t[p + "attn.c_proj.bias"] = {C};
      t[p + "mlp.c_fc.weight"] = {C, F};
      t[p + "mlp.c_fc.bias"] = {F};
      t[p + "mlp.c_proj.weight"] = {F, C};
      t[p + "mlp.c_proj.bias"] = {C};
    }
    t["transformer.ln_f.weight"] = {C};
    t["transformer.ln_f.bias"] = {C};
    return t;
  }
  const int64_t q = c.n_head * c.head_dim, kv = c.n_kv_head * c.head_dim;
  t["model.embed_tokens.weight"] = {V, C};
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = {C};
    t[p + "post_attention_layernorm.weight"] = {C};
    t[p + "self_attn.q_proj.weight"] = {q, C};  // Linear: (out, in)
    t[p + "self_attn.k_proj.weight"] = {kv, C};
    t[p + "self_attn.v_proj.weight"] = {kv, C};
    t[p + "self_attn.o_proj.weight"] = {C, q};
    if (c.qkv_bias) {
      t[p + "self_attn.q_proj.bias"] = {q};
      t[p + "self_attn.k_proj.bias"] = {kv};
      t[p + "self_attn.v_proj.bias"] = {kv};
    }
    if (c.o_bias) t[p + "self_attn.o_proj.bias"] = {C};
    t[p + "mlp.gate_proj.weight"] = {F, C};
    t[p + "mlp.up_proj.weight"] = {F, C};
    t[p + "mlp.down_proj.weight"] = {C, F};
  }
  t["model.norm.weight"] = {C};
  if (!c.tie_embeddings) t["lm_head.weight"] = {V, C};
  return t;
}

std::string CanonicalTensorName(const std::string& name, const ModelConfig& c) {
  const bool bare = c.architecture == Architecture::kGpt2 &&
                    name.rfind("transformer.", 0) != 0 && name != "lm_head.weight";
  return bare ? "transformer." + name : name;
}

bool IsIgnorableTensor(const std::string& name, const ModelConfig& c) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".attn.bias") || ends_with(".attn.masked_bias") ||
         ends_with(".rotary_emb.inv_freq") || (c.tie_embeddings && name == "lm_head.weight");
}

namespace {

std::vector<std::string> Projections(const std::string& architecture) {
  if (architecture == "gpt2") return {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
  return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
}

}  // namespace

bool IsLoraTarget(const std::string& architecture, const std::string& target) {
  for (const std::string& p : Projections(architecture)) {
    if (p == target || (p.size() > target.size() &&
                        p.compare(p.size() - target.size(), target.size(), target) == 0 &&
                        p[p.size() - target.size() - 1] == '.')) {
      return true;
    }
  }
  return false;
}

std::string LoraTargetsOf(const std::string& architecture) {
  std::string out;
  for (const std::string& p : Projections(architecture)) out += (out.empty() ? "" : ", ") + p;
  return out;
}

bool IsModelFileName(const std::string& name) {
  static const char* const kNames[] = {
      "config.json",          "generation_config.json", "model.safetensors",
      "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
      "special_tokens_map.json", "vocab.json",          "merges.txt"};
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  // Shards: model-00001-of-00004.safetensors
  auto digits = [&](size_t at) {
    for (size_t i = at; i < at + 5; ++i) {
      if (name[i] < '0' || name[i] > '9') return false;
    }
    return true;
  };
  return name.size() == 32 && name.compare(0, 6, "model-") == 0 && digits(6) &&
         name.compare(11, 4, "-of-") == 0 && digits(15) &&
         name.compare(20, 12, ".safetensors") == 0;
}

int64_t MaxModelFileBytes(const std::string& name) {
  if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0) return 0;
  if (name == "tokenizer.json" || name == "vocab.json" || name == "merges.txt" ||
      name == "model.safetensors.index.json") {
    return int64_t{32} << 20;
  }
  return int64_t{1} << 20;
}

int64_t MaxSequenceLength(const ModelConfig& c) {
  return c.sliding_window > 0 ? std::min(c.context_length, c.sliding_window) : c.context_length;
}

const std::vector<Preset>& Presets() {
  static const std::vector<Preset> kPresets = [] {
    auto gpt2 = [](int64_t context, int64_t layers, int64_t heads, int64_t d) {
      ModelConfig c;
      c.context_length = context;
      c.n_layer = layers;
      c.n_head = c.n_kv_head = heads;
      c.d_model = d;
      c.head_dim = d / heads;
      c.d_ff = 4 * d;
      c.eos_token_ids = {256};
      return c;
    };
    auto llama = [](int64_t context, int64_t layers, int64_t heads, int64_t kv_heads, int64_t d,
                    int64_t ff) {
      ModelConfig c;
      c.architecture = Architecture::kLlama;
      c.model_type = "llama";
      c.context_length = context;
      c.n_layer = layers;
      c.n_head = heads;
      c.n_kv_head = kv_heads;
      c.d_model = d;
      c.head_dim = d / heads;
      c.d_ff = ff;
      c.norm_eps = 1e-5;
      c.tie_embeddings = false;
      c.qkv_bias = c.o_bias = false;
      c.eos_token_ids = {256};
      return c;
    };
    return std::vector<Preset>{
        {"tiny-gpt2", "Tiny GPT-2: 4 layers, d_model 128, byte-level vocabulary",
         gpt2(256, 4, 4, 128)},
        {"tiny-llama", "Tiny Llama: 4 layers, d_model 128, 4 query and 2 key/value heads, "
                       "byte-level vocabulary",
         llama(256, 4, 4, 2, 128, 344)},
        {"small-gpt2", "Small GPT-2: 8 layers, d_model 512, byte-level vocabulary",
         gpt2(512, 8, 8, 512)},
        {"small-llama", "Small Llama: 8 layers, d_model 512, 8 query and 4 key/value heads, "
                        "byte-level vocabulary",
         llama(512, 8, 8, 4, 512, 1376)},
    };
  }();
  return kPresets;
}

const Preset* FindPreset(const std::string& name) {
  for (const Preset& p : Presets()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace tuneforge
