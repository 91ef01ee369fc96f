"""Resumable training: the run's state at the end of every epoch, in `OUT/resume/`.

One snapshot per phase (`pretrain.pt`, `finetune.pt`, `refit.pt`): model, optimizer,
scheduler, grad scaler, the best weights so far, torch's RNG state — tensors and plain values
written with `torch.save` and read back with `torch.load(weights_only=True)` (nothing is
unpickled) — beside `run.json`: the run's config, the data it read, and per phase the epoch
reached, its statistics, early-stopping state and the collator's generator state.

`riskstream train --resume` rebuilds everything deterministic (data, split, examples, the
model at its seed), then each phase starts from its snapshot: a finished phase is skipped with
its saved weights and RNG state, an interrupted one continues after its last saved epoch. The
result equals an uninterrupted run's (tests/unit/test_training_resume.py). A run that finishes
removes the folder: there is nothing left to resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch

from training.exceptions import TrainingError

__all__ = ["RESUME_DIR", "PhaseSnapshot", "ResumeStore"]

log = logging.getLogger(__name__)

RESUME_DIR: Final = "resume"
_FORMAT: Final = "riskstream-resume/1"
#: Settings that may change between the interrupted run and its resumption.
MAY_DIFFER: Final = frozenset({"device", "amp"})


@dataclass
class PhaseSnapshot:
    """A phase's state after `epoch` epochs (`done`: the phase finished)."""

    phase: str
    epoch: int
    done: bool
    info: dict[str, Any]  # JSON: stats, early-stopping state, collator state
    tensors: dict[str, Any] = field(default_factory=dict)  # state dicts and RNG states


class ResumeStore:
    """`OUT/resume/`: written during a run, read by `--resume`."""

    def __init__(self, out: Path, run: dict[str, Any]) -> None:
        self.folder = out / RESUME_DIR
        self.run = run  # {"config": ..., "data": ...}: what must match on resume
        self._phases: dict[str, dict[str, Any]] = {}

    @classmethod
    def fresh(cls, out: Path, run: dict[str, Any]) -> ResumeStore:
        """A new run: any earlier run's state in `out` is discarded."""
        store = cls(out, run)
        if store.folder.exists():
            log.info("%s: discarding an earlier run's resume state", store.folder)
            shutil.rmtree(store.folder)
        return store

    @classmethod
    def resume(cls, out: Path, run: dict[str, Any]) -> ResumeStore:
        """The interrupted run in `out`; refused when its config or data differ from `run`."""
        store = cls(out, run)
        path = store.folder / "run.json"
        if not path.is_file():
            raise TrainingError(f"--resume: no interrupted run in {store.folder}")
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainingError(f"{path}: unreadable ({exc})") from exc
        if saved.get("format") != _FORMAT:
            raise TrainingError(f"{path}: format is not {_FORMAT}")
        mine, theirs = run["config"], saved["run"]["config"]
        for key in sorted(set(mine) | set(theirs)):
            if key not in MAY_DIFFER and mine.get(key) != theirs.get(key):
                raise TrainingError(
                    f"--resume: setting {key} is {mine.get(key)!r}, the interrupted run "
                    f"used {theirs.get(key)!r}"
                )
        if run["data"] != saved["run"]["data"]:
            raise TrainingError(
                f"--resume: the data differ from the interrupted run's "
                f"({saved['run']['data']} then, {run['data']} now)"
            )
        store._phases = saved.get("phases", {})
        where = [
            f"{phase} " + ("done" if s["done"] else f"after epoch {s['epoch']}")
            for phase, s in store._phases.items()
        ]
        log.info("resuming %s: %s", out, ", ".join(where) or "from the start")
        return store

    def get(self, phase: str) -> PhaseSnapshot | None:
        """The phase's last snapshot, if any."""
        meta = self._phases.get(phase)
        if meta is None:
            return None
        path = self.folder / f"{phase}.pt"
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise TrainingError(f"{path}: unreadable resume state ({exc})") from exc
        return PhaseSnapshot(phase, int(meta["epoch"]), bool(meta["done"]), meta["info"], tensors)

    def save(self, snap: PhaseSnapshot) -> None:
        """Write the phase's snapshot, then the index: a crash leaves the previous one whole."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{snap.phase}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save(snap.tensors, tmp)
        os.replace(tmp, path)
        self._phases[snap.phase] = {"epoch": snap.epoch, "done": snap.done, "info": snap.info}
        index = {"format": _FORMAT, "run": self.run, "phases": self._phases}
        tmp_json = self.folder / "run.json.tmp"
        tmp_json.write_text(json.dumps(index, indent=1) + "\n")
        os.replace(tmp_json, self.folder / "run.json")
        log.debug("resume state: %s epoch %d%s", snap.phase, snap.epoch, " (done)" * snap.done)

    def clear(self) -> None:
        """The run finished: remove its resume state."""
        shutil.rmtree(self.folder, ignore_errors=True)


def rng_state() -> dict[str, torch.Tensor]:
    """torch's global RNG states (CPU, and CUDA where present)."""
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def restore_rng(tensors: dict[str, Any]) -> None:
    """Put torch's RNGs back as a snapshot saved them."""
    torch.set_rng_state(tensors["torch_rng"])
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda_rng"])
