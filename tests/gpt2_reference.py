"""GPT-2 logits written from Hugging Face's GPT-2 formulas with PyTorch, reading
the model folder with the standard library only: an independent check of the
engine's architecture and of the HF names and Conv1D layout it writes.

  /usr/bin/python3 gpt2_reference.py MODEL_DIR IDS_CSV OUT_FILE

writes the logits for the token ids, float32 little-endian, (T, V) row-major.
"""
import json
import math
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_tensors(path):
    """Every tensor of a safetensors file, as float32, by its name."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = bytearray(data[begin:end])
        out[name] = torch.frombuffer(raw, dtype=DTYPES[t["dtype"]]).reshape(t["shape"]).float()
    return out


def load(path):  # GPT-2's weights, named without the "transformer." prefix
    return {name.removeprefix("transformer."): t for name, t in read_tensors(path).items()}


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def gelu_new(x):  # HF's NewGELUActivation
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(cfg, w, ids):
    T, C, H = len(ids), cfg["n_embd"], cfg["n_head"]
    D, eps = C // H, cfg["layer_norm_epsilon"]
    x = w["wte.weight"][ids] + w["wpe.weight"][torch.arange(T)]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D: x W + b
        q, k, v = (t.reshape(T, H, D).transpose(0, 1) for t in qkv.split(C, dim=-1))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    return x @ w["wte.weight"].T  # the head is tied to the embedding


if __name__ == "__main__":
    model_dir, ids, out = sys.argv[1], [int(i) for i in sys.argv[2].split(",")], sys.argv[3]
    cfg = json.load(open(model_dir + "/config.json"))
    assert cfg["model_type"] == "gpt2" and cfg["activation_function"] == "gelu_new"
    with torch.no_grad():
        logits = forward(cfg, load(model_dir + "/model.safetensors"), ids)
    open(out, "wb").write(logits.contiguous().numpy().tobytes())
