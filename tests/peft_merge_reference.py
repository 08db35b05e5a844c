"""Merges a PEFT LoRA adapter into its base model the way PEFT does and
computes the logits with the independent references (gpt2_reference.py,
llama_reference.py): a check of the adapter's format (names, shapes,
fan_in_fan_out, alpha / r scaling) and of the merged export, written from
PEFT's formulas with the standard library and python3-torch only.

  /usr/bin/python3 peft_merge_reference.py BASE_DIR ADAPTER_DIR IDS_CSV OUT_FILE
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference  # noqa: E402
import llama_reference  # noqa: E402

PREFIX = "base_model.model."


def main():
    base_dir, adapter_dir, ids, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    ids = [int(i) for i in ids.split(",")]
    cfg = json.load(open(base_dir + "/config.json"))
    adapter_cfg = json.load(open(adapter_dir + "/adapter_config.json"))
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["bias"] == "none"
    scale = adapter_cfg["lora_alpha"] / adapter_cfg["r"]
    gpt2 = cfg["model_type"] == "gpt2"
    weights = (gpt2_reference if gpt2 else llama_reference).load(base_dir + "/model.safetensors")
    adapter = gpt2_reference.read_tensors(adapter_dir + "/adapter_model.safetensors")
    merged = 0
    for name, a in adapter.items():
        if not name.endswith(".lora_A.weight"):
            continue
        b = adapter[name.replace(".lora_A.", ".lora_B.")]
        target = name[len(PREFIX):].replace(".lora_A.weight", ".weight")
        if gpt2:
            target = target.removeprefix("transformer.")
        delta = (b @ a) * scale  # (out, in)
        if adapter_cfg["fan_in_fan_out"]:
            delta = delta.T  # Conv1D stores (in, out)
        assert weights[target].shape == delta.shape, (target, weights[target].shape, delta.shape)
        weights[target] = weights[target] + delta
        merged += 1
    assert merged > 0
    with torch.no_grad():
        if gpt2:
            logits = gpt2_reference.forward(cfg, weights, ids)
        else:
            logits = llama_reference.forward(cfg, weights, ids)
    open(out, "wb").write(logits.contiguous().numpy().tobytes())


if __name__ == "__main__":
    main()
