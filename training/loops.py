"""Pretraining, fine-tuning and batch scoring loops: on the run's device (mixed precision on
CUDA), with progress (training/progress.py) and a resumable snapshot after every epoch."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from events.features import windows_to_inputs
from training.collator import MaskedEventCollator
from training.config import TrainConfig
from training.data import Corpus
from training.distributed import shard, sync_gradients
from training.examples import ExampleSet, batch_windows, length_buckets
from training.exceptions import TrainingError
from training.model import EventBert
from training.progress import Progress
from training.resume import PhaseSnapshot, ResumeStore, restore_rng, rng_state

__all__ = ["PhaseStats", "Runtime", "finetune", "pretrain", "resolve_device", "score"]

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


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when torch sees a GPU, else CPU; `cuda` without one is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise TrainingError(
            f"--device cuda: CUDA is not available (torch {torch.__version__}, {build}, "
            "no GPU visible); use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"--device: must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@dataclass
class Runtime:
    """Where and how a run computes: device, mixed precision, progress, resume snapshots."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: str = "auto"  # auto (bf16 where supported, else fp16) | bf16 | fp16 | off
    progress: bool = True
    store: ResumeStore | None = None

    @classmethod
    def for_config(
        cls, cfg: TrainConfig, progress: bool = True, store: ResumeStore | None = None
    ) -> Runtime:
        """The runtime `cfg.device` and `cfg.amp` ask for."""
        return cls(resolve_device(cfg.device), cfg.amp, progress, store)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype: CUDA only; None runs in float32."""
        if self.device.type != "cuda" or self.amp == "off":
            return None
        if self.amp == "fp16" or (self.amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for the forward pass and loss, where `amp_dtype` says so."""
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for float16 (bfloat16 and float32 need none)."""
        return torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None


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


@dataclass
class _Trainer:
    """A phase's model, optimiser, schedule and scaler; one step; snapshots."""

    phase: str
    model: EventBert
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    stats: PhaseStats
    rt: Runtime

    def step(self, loss: torch.Tensor, samples: int, *, average: bool = False) -> None:
        """One optimiser step with gradient clipping, and its bookkeeping. Across ranks the
        gradients are summed first (`average`: averaged) — training/distributed.py."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()  # type: ignore[no-untyped-call]
            sync_gradients(self.model, average)
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            sync_gradients(self.model, average)
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.schedule.step()
        self.stats.steps += 1
        self.stats.samples += samples
        self.stats.losses.append(loss.item())

    def snapshot(
        self, epoch: int, done: bool, info: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> None:
        """Save the phase's state after `epoch` epochs, when the run keeps snapshots."""
        if self.rt.store is None:
            return
        tensors: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            **rng_state(),
            **(extra or {}),
        }
        if self.scaler is not None:
            tensors["scaler"] = self.scaler.state_dict()
        info = {"stats": asdict(self.stats), **info}
        self.rt.store.save(PhaseSnapshot(self.phase, epoch, done, info, tensors))

    def restore(self, snap: PhaseSnapshot) -> None:
        """Continue from a snapshot of this phase."""
        self.model.load_state_dict(snap.tensors["model"])
        self.optimizer.load_state_dict(snap.tensors["optimizer"])
        self.schedule.load_state_dict(snap.tensors["schedule"])
        if self.scaler is not None and "scaler" in snap.tensors:
            self.scaler.load_state_dict(snap.tensors["scaler"])
        restore_rng(snap.tensors)
        self.stats = PhaseStats(**snap.info["stats"])


def _nothing(model: nn.Module) -> torch.Tensor:
    """A zero loss wired to every parameter: a rank whose share of a batch is empty still
    takes part in the gradient sum."""
    params = list(model.parameters())
    return sum((p.sum() * 0.0 for p in params), torch.zeros((), device=params[0].device))


def _start(
    phase: str, model: EventBert, lr: float, total: int, cfg: TrainConfig, rt: Runtime
) -> tuple[_Trainer, PhaseSnapshot | None]:
    """The phase's trainer on the device, restored from its snapshot when resuming."""
    model.to(rt.device)
    optimizer, schedule = _optimizer(model, lr, cfg.weight_decay, total, cfg.warmup_share)
    trainer = _Trainer(phase, model, optimizer, schedule, rt.scaler(), PhaseStats(), rt)
    snap = rt.store.get(phase) if rt.store is not None else None
    if snap is not None:
        trainer.restore(snap)
        log.info("%s: resumed after epoch %d%s", phase, snap.epoch, " (done)" * snap.done)
    return trainer, snap


def pretrain(
    model: EventBert,
    corpus: Corpus,
    examples: ExampleSet,
    cfg: TrainConfig,
    rt: Runtime | None = None,
) -> PhaseStats:
    """Masked-event modelling (`training.collator`, `EventBert.mlm_loss`): hide a share of
    the window's events and predict each channel of each hidden event. Labels are not used."""
    rt = rt or Runtime()
    collator = MaskedEventCollator(cfg.mask_prob, cfg.seed + 1)
    epochs = [
        length_buckets(examples, cfg.batch_size, shuffle=True, seed=cfg.seed + e)
        for e in range(cfg.pretrain_epochs)
    ]
    total = sum(len(batches) for batches in epochs)
    trainer, snap = _start("pretrain", model, cfg.pretrain_lr, total, cfg, rt)
    first = 0
    if snap is not None:
        collator.load_state_dict(snap.info["collator"])
        first = snap.epoch
        if snap.done:
            return trainer.stats
    began = time.perf_counter() - trainer.stats.wall_s
    model.train()
    with Progress("pretrain", total, enabled=rt.progress) as bar:
        bar.update(sum(len(b) for b in epochs[:first]))
        for e in range(first, len(epochs)):
            for idx in epochs[e]:
                mine = shard(idx)  # this rank's part of the global batch (all of it alone)
                if len(mine):
                    batch = collator(*_tensors(corpus, examples, mine)).to(rt.device)
                    with rt.autocast():
                        loss = model.mlm_loss(batch)
                else:
                    loss = _nothing(model)
                trainer.step(loss, len(idx), average=True)
                bar.update(samples=len(idx), loss=trainer.stats.losses[-1])
            trainer.stats.wall_s = time.perf_counter() - began
            done = e + 1 == len(epochs)
            trainer.snapshot(e + 1, done, {"collator": collator.state_dict()})
    return trainer.stats


def finetune(
    model: EventBert,
    corpus: Corpus,
    train: ExampleSet,
    cfg: TrainConfig,
    validate: Callable[[EventBert], float] | None,
    rt: Runtime | None = None,
    *,
    epochs: int | None = None,
    phase: str = "finetune",
) -> PhaseStats:
    """Two sigmoid heads with class-balanced BCE, AdamW, warmup then linear decay; early
    stopping on `validate` (higher is better), the best epoch's weights kept. Without
    `validate` (the refit), `epochs` epochs and the last weights."""
    rt = rt or Runtime()
    n_epochs = cfg.finetune_epochs if epochs is None else epochs
    weight = torch.from_numpy(train.weight.astype(np.float32)).to(rt.device)
    y = torch.from_numpy(train.y.astype(np.float32)).to(rt.device)
    # Balance classes over the (weighted) population the subsample stands for.
    pos = (y * weight[:, None]).sum(dim=0)
    neg = ((1 - y) * weight[:, None]).sum(dim=0)
    pos_weight = (neg / pos.clamp(min=1.0)).clamp(max=1e4)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    steps_per_epoch = len(length_buckets(train, cfg.batch_size, shuffle=False, seed=0))
    total = steps_per_epoch * n_epochs
    trainer, snap = _start(phase, model, cfg.finetune_lr, total, cfg, rt)
    best, stale, first = -1.0, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    if snap is not None:
        best, stale, first = snap.info["best"], snap.info["stale"], snap.epoch
        best_state = snap.tensors.get("best_model")
        if snap.done:
            return trainer.stats
    if best_state is None:
        best_state = copy.deepcopy(model.state_dict())
    began = time.perf_counter() - trainer.stats.wall_s
    stopped = False
    with Progress(phase, total, enabled=rt.progress) as bar:
        bar.update(steps_per_epoch * first)
        for epoch in range(first, n_epochs):
            model.train()
            batches = length_buckets(
                train, cfg.batch_size, shuffle=True, seed=cfg.seed + 100 + epoch
            )
            epoch_began, seen = time.perf_counter(), 0
            for idx in batches:
                # The global batch's weight divides every rank's part: summed across ranks,
                # the gradients are the single-process ones.
                total_w = weight[torch.from_numpy(idx).to(rt.device)].sum()
                mine = shard(idx)
                if len(mine):
                    features, mask = (
                        t.to(rt.device, non_blocking=True) for t in _tensors(corpus, train, mine)
                    )
                    t_idx = torch.from_numpy(mine).to(rt.device)
                    with rt.autocast():
                        per_example = loss_fn(model.logits(features, mask), y[t_idx]).sum(dim=1)
                    w = weight[t_idx]
                    loss = (per_example * w).sum() / total_w
                else:
                    loss = _nothing(model)
                trainer.step(loss, len(idx))
                seen += len(idx)
                bar.update(samples=len(idx), loss=trainer.stats.losses[-1], epoch=epoch + 1)
            metric = validate(model) if validate is not None else float("nan")
            _log_epoch(phase, epoch + 1, n_epochs, seen, trainer.stats, metric, epoch_began)
            if validate is None:  # the refit: a fixed number of epochs, the last weights
                trainer.stats.best_epoch = epoch + 1
            else:
                trainer.stats.val_metric.append(metric)
                if metric > best:
                    best, stale, trainer.stats.best_epoch = metric, 0, epoch + 1
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                    stopped = stale > cfg.patience
            trainer.stats.wall_s = time.perf_counter() - began
            last = stopped or epoch + 1 == n_epochs
            if last and validate is not None:
                model.load_state_dict(best_state)
            trainer.snapshot(
                epoch + 1,
                last,
                {"best": best, "stale": stale},
                {"best_model": best_state} if validate is not None and not last else None,
            )
            if stopped:
                bar.finish_early()
                break
    return trainer.stats


def _log_epoch(
    phase: str,
    epoch: int,
    epochs: int,
    samples: int,
    stats: PhaseStats,
    metric: float,
    began: float,
) -> None:
    """One line per epoch: samples, running loss, validation metric, wall time."""
    log.info(
        "%s epoch %d/%d: %d samples, loss %.4f, validation PR-AUC (mean of heads) %s, %.1f s",
        phase,
        epoch,
        epochs,
        samples,
        float(np.mean(stats.losses[-50:])) if stats.losses else float("nan"),
        "n/a" if metric != metric else f"{metric:.4f}",
        time.perf_counter() - began,
    )


@torch.no_grad()
def score(
    model: EventBert,
    corpus: Corpus,
    examples: ExampleSet,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "score",
) -> npt.NDArray[np.float32]:
    """Probabilities [N, 2] for every example, in the examples' order, on the model's device
    (float32: the served graph's precision)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(examples), 2), dtype=np.float32)
    batches = length_buckets(examples, batch_size, shuffle=False, seed=0)
    with Progress(desc, len(batches), enabled=progress, transient=True, summary=False) as bar:
        for idx in batches:
            features, mask = _tensors(corpus, examples, idx)
            probs = model(
                features.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            )
            out[idx] = probs.float().cpu().numpy()
            bar.update(samples=len(idx))
    return out
