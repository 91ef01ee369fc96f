"""Training time and throughput for a preset on a simulated world (imports torch lazily)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from riskstream.bench.core import BenchResult
from simulator import WorldConfig, simulate_world

__all__ = ["bench_train"]


def bench_train(preset: str, users: int, days: float, seed: int) -> BenchResult:
    """Simulate a world, train `preset` on it, and tabulate each phase and the test PR-AUC."""
    from training.config import TrainConfig
    from training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        simulate_world(WorldConfig(users=users, days=days, seed=seed), world)
        report = train(
            world / "events.jsonl",
            world / "labels.jsonl",
            Path(tmp) / "model",
            TrainConfig.for_preset(preset, seed=0),
            force=True,  # timing, not quality: a small world without a head's positives still times
        )
    t = report["training"]
    rows = [
        {
            "phase": name,
            "samples": t[key]["samples"],
            "wall s": t[key]["wall_s"],
            "samples/s": t[key]["samples_per_s"],
        }
        for name, key in (("pretrain (masked events)", "pretrain"), ("fine-tune", "finetune"))
    ]
    rows.append(
        {
            "phase": "whole run (load → report)",
            "samples": report["data"]["events"],
            "wall s": t["wall_s"],
            "samples/s": report["data"]["events"] / t["wall_s"],
        }
    )
    heads = report["heads"]
    base = report["baseline"]
    return BenchResult(
        name=f"train-{preset}",
        rows=rows,
        notes=[
            f"{users:,} users × {days:g} days (seed {seed}), preset {preset}, "
            f"{t['model']['parameters']:,} parameters, torch threads {t['torch_threads']}",
            "test PR-AUC model / baseline: "
            + ", ".join(f"{h} {heads[h]['pr_auc']:.4f} / {base[h]['pr_auc']:.4f}" for h in heads),
        ],
    )
