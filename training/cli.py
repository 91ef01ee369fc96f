"""Training-side subcommands: `simulate` (a labelled world) and, for now, the `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from training.exceptions import SimulationError
from training.simulator import ATTACK_KINDS, KIND_LABEL, WorldConfig, WorldSummary, simulate_world

__all__ = ["demo", "render_summary", "simulate"]

_out = Console()


def render_summary(summary: WorldSummary, out_dir: Path) -> None:
    """Print the world's numbers as tables."""
    world = Table(title=f"Simulated world → {out_dir}", show_header=False)
    world.add_column("what")
    world.add_column("value", justify="right")
    rate = summary.events / summary.wall_s if summary.wall_s > 0 else float("nan")
    rows = [
        ("events", f"{summary.events:,}"),
        ("users (normal)", f"{summary.users:,} ({summary.normal_users:,})"),
        ("sessions (normal users)", f"{summary.sessions:,}"),
        ("session purchase rate", f"{summary.purchase_rate:.2%}"),
        ("wall time", f"{summary.wall_s:.1f} s ({rate:,.0f} events/s)"),
    ]
    for what, value in rows:
        world.add_row(what, value)
    _out.print(world)

    episodes = Table(title="Label episodes by kind")
    episodes.add_column("label")
    episodes.add_column("kind")
    episodes.add_column("episodes", justify="right")
    for kind in sorted(summary.episodes_per_kind):
        episodes.add_row(KIND_LABEL[kind], kind, f"{summary.episodes_per_kind[kind]:,}")
    _out.print(episodes)

    types = Table(title="Events by type")
    types.add_column("type")
    types.add_column("events", justify="right")
    types.add_column("share", justify="right")
    for etype, count in sorted(summary.events_per_type.items(), key=lambda kv: -kv[1]):
        types.add_row(etype, f"{count:,}", f"{count / max(summary.events, 1):.1%}")
    _out.print(types)


def _config(users: int, days: float, seed: int, attack_share: float, off: list[str]) -> WorldConfig:
    all_kinds = set(ATTACK_KINDS)
    unknown = sorted(set(off) - all_kinds)
    if unknown:
        raise SimulationError(
            f"--no-attack: unknown kind {unknown[0]!r} (kinds: {', '.join(sorted(all_kinds))})"
        )
    return WorldConfig(
        users=users,
        days=days,
        seed=seed,
        attack_share=attack_share,
        attack_kinds=frozenset(all_kinds - set(off)),
    )


UsersOpt = Annotated[
    int, typer.Option("--users", min=1, help="Number of accounts (attackers included).")
]
DaysOpt = Annotated[float, typer.Option("--days", min=0.01, help="Days of activity.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: same arguments, same files.")]
ShareOpt = Annotated[
    float,
    typer.Option("--attack-share", min=0.0, max=0.5, help="Share of users involved in attacks."),
]
OffOpt = Annotated[
    list[str] | None,
    typer.Option("--no-attack", help="Switch an attack kind off (repeatable)."),
]


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Directory for events/labels/feedback.")],
    users: UsersOpt = 1000,
    days: DaysOpt = 2.0,
    seed: SeedOpt = 0,
    attack_share: ShareOpt = 0.02,
    no_attack: OffOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Simulate a labelled e-commerce world: events.jsonl, labels.jsonl, feedback.jsonl."""
    config = _config(users, days, seed, attack_share, no_attack or [])
    summary = simulate_world(config, out, progress=not quiet)
    render_summary(summary, out)


def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory.")] = Path("out/demo"),
    users: UsersOpt = 2000,
    days: DaysOpt = 1.0,
    seed: SeedOpt = 7,
) -> None:
    """The end-to-end demo. For now: simulate a small world and summarise it."""
    _out.rule("[bold]1/1 simulate a labelled world")
    summary = simulate_world(_config(users, days, seed, 0.02, []), out, progress=True)
    render_summary(summary, out)
    _out.print(
        "Next steps (their issues are open): train → export → stream the held-out part through "
        "the worker and watch alerts."
    )
