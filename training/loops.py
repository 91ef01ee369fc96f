"""Pretraining, fine-tuning and batch scoring loops, with progress bars and running losses."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from events.features import MASK_ID, windows_to_inputs
from training.config import TrainConfig
from training.data import Corpus
from training.examples import ExampleSet, batch_windows, length_buckets
from training.model import EventBert

__all__ = ["PhaseStats", "finetune", "pretrain", "score"]

log = logging.getLogger(__name__)


@dataclass
class PhaseStats:
    """What a phase did: steps, samples, wall time, losses (and the metric history)."""

    steps: int = 0
    samples: int = 0
    wall_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def samples_per_s(self) -> float:
        """Training throughput."""
        return self.samples / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, float | int | list[float]]:
        """Plain JSON-able summary."""
        return {
            "steps": self.steps,
            "samples": self.samples,
            "wall_s": round(self.wall_s, 2),
            "samples_per_s": round(self.samples_per_s, 1),
            "final_loss": round(float(np.mean(self.losses[-50:])), 5) if self.losses else 0.0,
            "val_metric": [round(v, 5) for v in self.val_metric],
            "best_epoch": self.best_epoch,
        }


def _tensors(
    corpus: Corpus, examples: ExampleSet, idx: npt.NDArray[np.int64]
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = windows_to_inputs(batch_windows(corpus, examples, idx), corpus.spec)
    return torch.from_numpy(inputs.features), torch.from_numpy(inputs.attention_mask)


def _optimizer(
    model: nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_share: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        # Biases, LayerNorms and embeddings are not decayed (as in BERT).
        (no_decay if param.ndim < 2 or "embed" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
    )
    warmup = max(1, int(total_steps * warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    loss: torch.Tensor,
    stats: PhaseStats,
    samples: int,
) -> None:
    """One optimiser step with gradient clipping, and its bookkeeping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    stats.steps += 1
    stats.samples += samples
    stats.losses.append(loss.item())


def pretrain(
    model: EventBert, corpus: Corpus, examples: ExampleSet, cfg: TrainConfig, progress: bool = True
) -> PhaseStats:
    """Masked-event modelling: hide a share of the window's events (every channel → MASK_ID)
    and predict each channel of each hidden event. Labels are not used."""
    rng = np.random.default_rng(cfg.seed + 1)
    stats = PhaseStats()
    epochs = [
        length_buckets(examples, cfg.batch_size, shuffle=True, seed=cfg.seed + e)
        for e in range(cfg.pretrain_epochs)
    ]
    total = sum(len(batches) for batches in epochs)
    optimizer, schedule = _optimizer(
        model, cfg.pretrain_lr, cfg.weight_decay, total, cfg.warmup_share
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    began = time.perf_counter()
    with tqdm(total=total, desc="pretrain", unit="batch", disable=not progress) as bar:
        for batches in epochs:
            for idx in batches:
                features, mask = _tensors(corpus, examples, idx)  # [B, L, C], [B, L]
                real = mask.bool()
                hide = torch.from_numpy(rng.random(real.shape) < cfg.mask_prob) & real
                # Every window hides at least one event: its last (the scored one).
                last = mask.sum(dim=1) - 1
                rows = torch.arange(len(last))
                hide[rows[~hide.any(dim=1)], last[~hide.any(dim=1)]] = True
                masked = features.clone()
                masked[hide] = MASK_ID
                hidden = model.encode(masked, mask)  # [B, L, H]
                targets = features[hide]  # [M, C]
                logits = model.mlm_logits(hidden[hide])  # C × [M, vocab_c]
                loss = sum(
                    (loss_fn(lg, targets[:, c]) for c, lg in enumerate(logits)),
                    torch.zeros(()),
                ) / len(logits)
                _step(model, optimizer, schedule, loss, stats, len(idx))
                bar.set_postfix(loss=f"{np.mean(stats.losses[-50:]):.3f}")
                bar.update(1)
    stats.wall_s = time.perf_counter() - began
    return stats


def finetune(
    model: EventBert,
    corpus: Corpus,
    train: ExampleSet,
    cfg: TrainConfig,
    validate: Callable[[EventBert], float],
    progress: bool = True,
) -> PhaseStats:
    """Two sigmoid heads with class-balanced BCE, AdamW, warmup then linear decay; early
    stopping on `validate` (higher is better); the best epoch's weights are kept."""
    stats = PhaseStats()
    weight = torch.from_numpy(train.weight.astype(np.float32))
    y = torch.from_numpy(train.y.astype(np.float32))
    # Balance classes over the (weighted) population the subsample stands for.
    pos = (y * weight[:, None]).sum(dim=0)
    neg = ((1 - y) * weight[:, None]).sum(dim=0)
    pos_weight = (neg / pos.clamp(min=1.0)).clamp(max=1e4)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    steps_per_epoch = len(length_buckets(train, cfg.batch_size, shuffle=False, seed=0))
    total = steps_per_epoch * cfg.finetune_epochs
    optimizer, schedule = _optimizer(
        model, cfg.finetune_lr, cfg.weight_decay, total, cfg.warmup_share
    )
    best_state, best, stale = copy.deepcopy(model.state_dict()), -1.0, 0
    began = time.perf_counter()
    with tqdm(total=total, desc="fine-tune", unit="batch", disable=not progress) as bar:
        for epoch in range(cfg.finetune_epochs):
            model.train()
            batches = length_buckets(
                train, cfg.batch_size, shuffle=True, seed=cfg.seed + 100 + epoch
            )
            for idx in batches:
                features, mask = _tensors(corpus, train, idx)
                t_idx = torch.from_numpy(idx)
                per_example = loss_fn(model.logits(features, mask), y[t_idx]).sum(dim=1)
                w = weight[t_idx]
                loss = (per_example * w).sum() / w.sum()
                _step(model, optimizer, schedule, loss, stats, len(idx))
                bar.set_postfix(loss=f"{np.mean(stats.losses[-50:]):.4f}", epoch=epoch + 1)
                bar.update(1)
            metric = validate(model)
            stats.val_metric.append(metric)
            log.info("epoch %d: validation PR-AUC (mean of heads) %.4f", epoch + 1, metric)
            if metric > best:
                best, stale, stats.best_epoch = metric, 0, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale > cfg.patience:
                    bar.update(total - bar.n)
                    break
    stats.wall_s = time.perf_counter() - began
    model.load_state_dict(best_state)
    return stats


@torch.no_grad()
def score(
    model: EventBert,
    corpus: Corpus,
    examples: ExampleSet,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "score",
) -> npt.NDArray[np.float32]:
    """Probabilities [N, 2] for every example, in the examples' order."""
    model.eval()
    out = np.zeros((len(examples), 2), dtype=np.float32)
    batches = length_buckets(examples, batch_size, shuffle=False, seed=0)
    for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        features, mask = _tensors(corpus, examples, idx)
        out[idx] = model(features, mask).numpy()
    return out
