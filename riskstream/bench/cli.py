"""`riskstream bench ...`: each benchmark prints a table and saves JSON beside the others."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riskstream.bench.contract import bench_parse
from riskstream.bench.core import BenchResult
from riskstream.bench.training import bench_train
from riskstream.bench.world import bench_simulate

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks (figures go to docs/benchmarks.md).", no_args_is_help=True)

OutOpt = Annotated[Path, typer.Option("--out", help="Directory for the JSON results.")]


def _show(result: BenchResult, out: Path) -> None:
    result.print()
    result.save(out)


@bench_app.command("parse")
def parse_cmd(
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", exists=True, dir_okay=False, help="JSONL file (default: simulate)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1000, help="Messages to time.")] = 200_000,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 3,
    out: OutOpt = Path("benchmarks/results"),
) -> None:
    """Parse + validate throughput on one core."""
    _show(bench_parse(events, limit, repeats), out)


@bench_app.command("simulate")
def simulate_cmd(
    users: Annotated[int, typer.Option("--users", min=1)] = 20_000,
    days: Annotated[float, typer.Option("--days", min=0.01)] = 2.0,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    out: OutOpt = Path("benchmarks/results"),
) -> None:
    """Simulator throughput on a 20k-user world."""
    _show(bench_simulate(users, days, seed), out)


@bench_app.command("train")
def train_cmd(
    preset: Annotated[str, typer.Option("--preset", help="tiny, small or base.")] = "small",
    users: Annotated[int, typer.Option("--users", min=1)] = 20_000,
    days: Annotated[float, typer.Option("--days", min=0.01)] = 2.0,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    out: OutOpt = Path("benchmarks/results"),
) -> None:
    """Training time per phase and samples/s for a preset on a simulated world."""
    _show(bench_train(preset, users, days, seed), out)
