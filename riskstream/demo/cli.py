"""`riskstream demo`, the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from events.outputs import check_output
from training.cli import DaysOpt, SeedOpt, UsersOpt

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory.")] = Path("out/demo"),
    users: UsersOpt = 2000,
    days: DaysOpt = 2.0,
    seed: SeedOpt = 7,
    review: Annotated[
        bool,
        typer.Option(
            "--review",
            help="Then serve the review console on the alerts (a finished run of the same "
            "demo in --out is reused, not run again).",
        ),
    ] = False,
    rerun: Annotated[
        bool, typer.Option("--rerun", help="With --review: run every step again anyway.")
    ] = False,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow/--no-shadow",
            help="Run the worker with the model exported FP32 only as its shadow, and compare "
            "(riskstream shadow report's table).",
        ),
    ] = True,
) -> None:
    """The end-to-end demo: simulate, train the tiny model, export, stream the held-out part
    through a local broker, Redis and the worker, and score the alerts."""
    from riskstream.demo.run import reusable_alerts, reusable_shadow_alerts, run_demo

    check_output(out, "--out", folder=True)
    alerts = None
    shadow_alerts = None
    if review and not rerun:
        alerts = reusable_alerts(out, users=users, days=days, seed=seed)
        if alerts is not None:
            shadow_alerts = reusable_shadow_alerts(out) if shadow else None
            Console(highlight=False).print(
                f"reusing the demo in {out} (its bundle and {len(alerts)} alerts"
                + (f", its shadow's {len(shadow_alerts)}" if shadow_alerts is not None else "")
                + "; --rerun runs it again)",
                soft_wrap=True,
            )
    if alerts is None:
        result = run_demo(out, users=users, days=days, seed=seed, shadow_model=shadow)
        alerts, shadow_alerts = result.alerts, result.shadow_alerts
    if review:
        from riskstream.demo.review_console import serve_demo_console

        serve_demo_console(out, alerts, shadow_alerts=shadow_alerts)
