"""Llama-family logits (Llama, Mistral, Qwen2) written from Hugging Face's
modeling formulas with PyTorch, reading the model folder with the standard
library only (gpt2_reference.read_tensors): an independent check of the
engine's RMSNorm, rotary embeddings (HF's rotate_half layout and Llama 3.1
scaling), grouped-query attention, sliding window, SwiGLU, biases and head,
and of the HF names it writes.

  /usr/bin/python3 llama_reference.py MODEL_DIR IDS_CSV OUT_FILE

writes the logits for the token ids, float32 little-endian, (T, V) row-major.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_reference import read_tensors  # noqa: E402  (the shared safetensors reader)

load = read_tensors  # Llama's names are used as they are


def rms_norm(x, w, eps):  # LlamaRMSNorm
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def inv_freq(cfg, dim):  # _compute_default_rope_parameters, then llama3 scaling
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    s = cfg.get("rope_scaling")
    if s and s.get("rope_type", s.get("type")) == "llama3":
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def forward(cfg, w, ids):
    T, C = len(ids), cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    K = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim") or C // H
    eps = cfg["rms_norm_eps"]
    qwen2 = cfg["model_type"] == "qwen2"
    qkv_bias = qwen2 or cfg.get("attention_bias", False)
    o_bias = not qwen2 and cfg.get("attention_bias", False)

    freqs = torch.arange(T).float()[:, None] * inv_freq(cfg, D)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    blocked = j > i
    window = cfg.get("sliding_window") if cfg["model_type"] == "mistral" else None
    if window:
        blocked = blocked | (i - j >= window)

    def linear(x, name, bias):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y

    x = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, p + "self_attn.q_proj", qkv_bias).reshape(T, H, D).transpose(0, 1)
        k = linear(h, p + "self_attn.k_proj", qkv_bias).reshape(T, K, D).transpose(0, 1)
        v = linear(h, p + "self_attn.v_proj", qkv_bias).reshape(T, K, D).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k[:, None].expand(K, H // K, T, D).reshape(H, T, D)  # repeat_kv
        v = v[:, None].expand(K, H // K, T, D).reshape(H, T, D)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = att.masked_fill(blocked, float("-inf")).softmax(-1)
        y = (att @ v).transpose(0, 1).reshape(T, H * D)
        x = x + linear(y, p + "self_attn.o_proj", o_bias)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, p + "mlp.gate_proj", False)
        up = linear(h, p + "mlp.up_proj", False)
        x = x + linear(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj", False)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


if __name__ == "__main__":
    model_dir, ids, out = sys.argv[1], [int(i) for i in sys.argv[2].split(",")], sys.argv[3]
    cfg = json.load(open(model_dir + "/config.json"))
    assert cfg["model_type"] in ("llama", "mistral", "qwen2") and cfg["hidden_act"] == "silu"
    with torch.no_grad():
        logits = forward(cfg, load(model_dir + "/model.safetensors"), ids)
    open(out, "wb").write(logits.contiguous().numpy().tobytes())
