"""Data-parallel training across processes with `torch.distributed` (gloo on CPU, NCCL on GPUs).

Started by torchrun (`riskstream train --nproc N` runs it for you; or `torchrun --nproc-per-node
N -m training train ...`, `--nnodes` for several hosts). Every rank reads the corpus and builds
the same examples (seeded); each global batch is cut into one shard per rank; after the backward
pass the gradients are summed (fine-tuning: each shard's loss is already divided by the global
batch's weight, so the sum is the single-process gradient) or averaged (masked-event
pretraining) across ranks with `all_reduce` — what `DistributedDataParallel` does, done by hand
because the model is driven through `mlm_loss`/`logits`, not `forward`, which DDP's hooks need.
Every rank then takes the same optimiser step, so the weights stay equal; the validation,
the GBDT and the report are computed on every rank and only rank 0 writes them.

A rank that dies makes the others fail at their next collective (gloo: connection closed; at
worst after `timeout_s`), and torchrun stops the rest: the run fails, it does not hang.
"""

from __future__ import annotations

import datetime
import os
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "TIMEOUT_S",
    "init_from_env",
    "is_main",
    "rank",
    "shard",
    "sync_gradients",
    "world_size",
]

#: How long a collective waits for a silent peer before the run fails.
TIMEOUT_S: Final = 300


def init_from_env(device: torch.device, timeout_s: int = TIMEOUT_S) -> bool:
    """Join the process group torchrun described in the environment (WORLD_SIZE > 1); False
    when this is a single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def world_size() -> int:
    """Ranks in the run (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this rank writes the checkpoint, the report and the snapshots."""
    return rank() == 0


def shard(idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """This rank's part of a global batch (every world_size-th example from its rank)."""
    n = world_size()
    return idx if n == 1 else idx[rank() :: n]


def sync_gradients(model: nn.Module, average: bool) -> None:
    """Sum (or average) every gradient across ranks, in one flat buffer."""
    n = world_size()
    if n == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if average:
        flat /= n
    at = 0
    for p, g in zip(params, grads, strict=True):
        size = g.numel()
        p.grad = flat[at : at + size].view_as(g).clone()
        at += size
