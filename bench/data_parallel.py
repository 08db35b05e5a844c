"""Data-parallel training in Python as a practitioner writes it: the model and
step of bench/train_speed.py wrapped in DistributedDataParallel over Gloo
(torch.distributed, the same libtorch 1.13 from Debian's python3-torch), one
process per rank with one thread, so bench/data_parallel.sh can set it beside
tuneforge-train's ranks. Each rank trains B sequences of T tokens per step;
rank 0 prints the tokens/s of all ranks together at the median step (the
first two steps excluded).

  /usr/bin/python3 data_parallel.py RANK WORLD PORT ARCH D_MODEL LAYERS HEADS KV_HEADS D_FF B T STEPS
"""
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_speed import Model, V  # noqa: E402


def main(rank, world, port, arch, C, L, H, K, Fd, B, T, steps):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    net = Model(arch, C, L, H, K, Fd, T)
    # Gloo in libtorch 1.13 cannot broadcast the bool causal mask, which DDP
    # would sync as a buffer: keep it a plain attribute (the same on every rank).
    mask = net._buffers.pop("mask")
    net.mask = mask
    model = torch.nn.parallel.DistributedDataParallel(net)
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    torch.manual_seed(1 + rank)
    ids = torch.randint(0, 256, (B, T + 1))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1), reduction="sum")
        (loss / (B * T)).backward()  # DDP averages the ranks' gradients
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - start)
    steady = sorted(times[2:])
    if rank == 0:
        print(f"python tokens/s {world * B * T / steady[len(steady) // 2]:.0f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*(int(x) if i != 3 else x for i, x in enumerate(sys.argv[1:])))
