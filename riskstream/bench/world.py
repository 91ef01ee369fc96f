"""How fast the simulator writes a world."""

from __future__ import annotations

import tempfile
from pathlib import Path

from riskstream.bench.core import BenchResult
from simulator import WorldConfig, simulate_world

__all__ = ["bench_simulate"]


def bench_simulate(users: int, days: float, seed: int) -> BenchResult:
    """Events/s of `simulate_world` for one world, files written to a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = simulate_world(WorldConfig(users=users, days=days, seed=seed), Path(tmp))
        size_mb = (Path(tmp) / "events.jsonl").stat().st_size / 1e6
    return BenchResult(
        name="simulate",
        rows=[
            {
                "world": f"{users:,} users × {days:g} days",
                "events": summary.events,
                "episodes": sum(summary.episodes_per_kind.values()),
                "wall s": summary.wall_s,
                "events/s": summary.events / summary.wall_s,
                "MB": size_mb,
            }
        ],
        notes=[
            "targets: 1,000,000 events in <= 60 s; 20,000 users × 2 days in <= 120 s",
            "episodes per kind: "
            + ", ".join(f"{k} {v}" for k, v in sorted(summary.episodes_per_kind.items())),
        ],
    )
