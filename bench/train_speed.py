"""The training step of tuneforge-train written in Python with PyTorch (the
same libtorch, 1.13, from Debian's python3-torch) as a practitioner writes
it: nn.Module blocks, F.gelu, F.cross_entropy, clip_grad_norm_ and
torch.optim.AdamW; the same GPT-2 or Llama block, batch shape, loss,
clipping and optimizer, so bench/train_speed.sh can compare tokens/s side by
side. With LORA_RANK > 0, PEFT-style LoRA: the base frozen, adapters A and B
on the family's default targets (GPT-2: c_attn; Llama: q_proj, v_proj), only
they in the optimizer. Also the GEMM throughput of this machine through the
same library.

  /usr/bin/python3 train_speed.py train ARCH D_MODEL LAYERS HEADS KV_HEADS D_FF B T STEPS THREADS [LORA_RANK]
  /usr/bin/python3 train_speed.py gemm M K N THREADS

BENCH_DEVICE=cuda runs on the GPU (bench/cuda.sh), and BENCH_BF16=1 there
under torch.autocast in bfloat16, as the engine's bf16 precision computes.
"""
import contextlib
import os
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

V = 258


class LoraLinear(nn.Module):
    """base(x) + B(A(x)) * alpha / r, as PEFT computes it; base frozen."""

    def __init__(self, base, rank, alpha=16.0):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale


def add_lora(model, rank):
    for p in model.parameters():
        p.requires_grad_(False)
    targets = ("c_attn",) if model.arch == "gpt2" else ("q_proj", "v_proj")
    for block in model.blocks:
        for name in targets:
            setattr(block.attn, name, LoraLinear(getattr(block.attn, name), rank))


class Attention(nn.Module):
    def __init__(self, arch, C, H, K):
        super().__init__()
        self.arch, self.H, self.K, self.D = arch, H, K, C // H
        if arch == "gpt2":
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        else:
            D = self.D
            self.q_proj = nn.Linear(C, H * D, bias=False)
            self.k_proj = nn.Linear(C, K * D, bias=False)
            self.v_proj = nn.Linear(C, K * D, bias=False)
            self.o_proj = nn.Linear(H * D, C, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        H, K, D = self.H, self.K, self.D
        if self.arch == "gpt2":
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        else:
            q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)
            k = self.k_proj(x).view(B, T, K, D).transpose(1, 2)
            v = self.v_proj(x).view(B, T, K, D).transpose(1, 2)
            rot = lambda t: torch.cat((-t[..., D // 2:], t[..., : D // 2]), -1)
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
            if K != H:
                k, v = k.repeat_interleave(H // K, 1), v.repeat_interleave(H // K, 1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, H * D)
        return self.c_proj(y) if self.arch == "gpt2" else self.o_proj(y)


class RMSNorm(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))


class Block(nn.Module):
    def __init__(self, arch, C, H, K, Fd):
        super().__init__()
        self.arch = arch
        norm = (lambda: nn.LayerNorm(C)) if arch == "gpt2" else (lambda: RMSNorm(C))
        self.n1, self.n2, self.attn = norm(), norm(), Attention(arch, C, H, K)
        if arch == "gpt2":
            self.fc, self.proj = nn.Linear(C, Fd), nn.Linear(Fd, C)
        else:
            self.gate = nn.Linear(C, Fd, bias=False)
            self.up = nn.Linear(C, Fd, bias=False)
            self.down = nn.Linear(Fd, C, bias=False)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.n1(x), cos, sin, mask)
        h = self.n2(x)
        if self.arch == "gpt2":
            return x + self.proj(F.gelu(self.fc(h), approximate="tanh"))
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, arch, C, L, H, K, Fd, T):
        super().__init__()
        self.arch = arch
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C) if arch == "gpt2" else None
        self.blocks = nn.ModuleList(Block(arch, C, H, K, Fd) for _ in range(L))
        self.norm = nn.LayerNorm(C) if arch == "gpt2" else RMSNorm(C)
        self.head = None if arch == "gpt2" else nn.Linear(C, V, bias=False)
        self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1))
        D = C // H
        inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2).float() / D))
        emb = torch.cat([torch.outer(torch.arange(T).float(), inv)] * 2, -1)
        self.register_buffer("cos", emb.cos())
        self.register_buffer("sin", emb.sin())

    def forward(self, ids):
        T = ids.shape[1]
        x = self.wte(ids)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=ids.device))
        for b in self.blocks:
            x = b(x, self.cos[:T], self.sin[:T], self.mask)
        x = self.norm(x)
        return x @ self.wte.weight.T if self.head is None else self.head(x)


DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
BF16 = os.environ.get("BENCH_BF16") == "1"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def train(arch, C, L, H, K, Fd, B, T, steps, threads, lora_rank=0):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Model(arch, C, L, H, K, Fd, T).to(DEVICE)
    if lora_rank > 0:
        add_lora(model, lora_rank)
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    ids = torch.randint(0, 256, (B, T + 1)).to(DEVICE)
    autocast = torch.autocast(DEVICE, dtype=torch.bfloat16) if BF16 else contextlib.nullcontext()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, V), ids[:, 1:].reshape(-1), reduction="sum")
        (loss / (B * T)).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        loss.item()  # waits for the step, on any device
        times.append(time.perf_counter() - start)
    steady = sorted(times[2:])  # the first steps allocate
    print(f"python tokens/s {B * T / steady[len(steady) // 2]:.0f}")  # at the median step


def gemm(M, K, N, threads):
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if BF16 else torch.float32
    a = torch.randn(M, K, device=DEVICE, dtype=dtype)
    b = torch.randn(K, N, device=DEVICE, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    reps, start = 20, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    seconds = (time.perf_counter() - start) / reps
    print(f"gemm {M}x{K}x{N} GFLOP/s {2 * M * K * N / seconds / 1e9:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "gemm":
        gemm(*(int(x) for x in sys.argv[2:6]))
    else:
        arch = sys.argv[2]
        train(arch, *(int(x) for x in sys.argv[3:]))
