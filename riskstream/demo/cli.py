"""`riskstream demo`, the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli import DaysOpt, SeedOpt, UsersOpt

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory.")] = Path("out/demo"),
    users: UsersOpt = 2000,
    days: DaysOpt = 2.0,
    seed: SeedOpt = 7,
    review: Annotated[
        bool, typer.Option("--review", help="Then serve the review console on the alerts.")
    ] = False,
) -> None:
    """The end-to-end demo: simulate, train the tiny model, export, stream the held-out part
    through a local broker, Redis and the worker, and score the alerts."""
    from riskstream.demo.run import run_demo

    result = run_demo(out, users=users, days=days, seed=seed)
    if review:
        from riskstream.review.demo import serve_demo_console

        serve_demo_console(out, result.alerts)
