"""Training-side subcommands: `simulate`, `train` (`evaluate` lives in export/cli.py: it also
scores bundles).

torch is imported inside `train` and `evaluate` only, so the other commands stay light.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from training.exceptions import SimulationError
from training.simulator import (
    ATTACK_KINDS,
    ATTACK_PRESETS,
    KIND_LABEL,
    WorldConfig,
    WorldSummary,
    simulate_world,
)

__all__ = [
    "DaysOpt",
    "SeedOpt",
    "UsersOpt",
    "render_metrics",
    "render_summary",
    "simulate",
    "train",
]

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


def _config(
    users: int,
    days: float,
    seed: int,
    attack_share: float,
    off: list[str],
    attacks: str = "all",
    only: list[str] | None = None,
) -> WorldConfig:
    """The world asked for: the kinds of preset `attacks`, or `only` these, minus `off`."""
    all_kinds = set(ATTACK_KINDS)
    if attacks not in ATTACK_PRESETS:
        raise SimulationError(
            f"--attacks: unknown preset {attacks!r} (presets: {', '.join(ATTACK_PRESETS)})"
        )
    for flag, kinds in (("--no-attack", off), ("--only-attack", only or [])):
        unknown = sorted(set(kinds) - all_kinds)
        if unknown:
            raise SimulationError(
                f"{flag}: unknown kind {unknown[0]!r} (kinds: {', '.join(sorted(all_kinds))})"
            )
    chosen = set(only) if only else set(ATTACK_PRESETS[attacks])
    return WorldConfig(
        users=users,
        days=days,
        seed=seed,
        attack_share=attack_share,
        attack_kinds=frozenset(chosen - set(off)),
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
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option("--only-attack", help="Only this attack kind (repeatable; overrides --attacks)."),
]
PresetOpt = Annotated[
    str,
    typer.Option(
        "--attacks",
        help=f"Attack kinds: {', '.join(ATTACK_PRESETS)} (hard: those that look like customers).",
    ),
]


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Directory for events/labels/feedback.")],
    users: UsersOpt = 1000,
    days: DaysOpt = 2.0,
    seed: SeedOpt = 0,
    attack_share: ShareOpt = 0.02,
    no_attack: OffOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    attacks: PresetOpt = "all",
    only_attack: OnlyOpt = None,
) -> None:
    """Simulate a labelled e-commerce world: events.jsonl, labels.jsonl, feedback.jsonl."""
    config = _config(users, days, seed, attack_share, no_attack or [], attacks, only_attack)
    summary = simulate_world(config, out, progress=not quiet)
    render_summary(summary, out)


class Preset(StrEnum):
    """Model size presets."""

    tiny = "tiny"
    small = "small"
    base = "base"


#: Report key → the label shown in the terminal table (report.md has the full names).
_METRICS = {
    "pr_auc": "PR-AUC",
    "roc_auc": "ROC-AUC",
    "recall_at_fpr_0.001": "recall @ FPR 0.1%",
    "recall_at_fpr_0.01": "recall @ FPR 1%",
    "threshold": "threshold",
    "precision": "precision",
    "recall": "recall",
    "episode_recall": "episode recall",
    "normal_users_alerted_per_1000_per_day": "normal alerted /1k/day",
    "median_detection_delay_events": "delay (events)",
    "median_detection_delay_s": "delay (s)",
    "caught_before_purchase": "before purchase",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def render_metrics(report: dict[str, Any], title: str) -> None:
    """Model vs baseline, per head, as one table, and the verdicts."""
    from training.report import verdict  # matplotlib: only when there is a report to show

    table = Table(title=title)
    table.add_column("metric")
    heads = list(report["heads"])
    for head in heads:
        table.add_column(f"{head}\nmodel", justify="right")
        table.add_column("\nbaseline", justify="right")
    for name, label in _METRICS.items():
        row = [label]
        for head in heads:
            row += [_fmt(report["heads"][head].get(name)), _fmt(report["baseline"][head].get(name))]
        table.add_row(*row)
    _out.print(table)
    for head in heads:
        _out.print(verdict(head, report["heads"][head], report["baseline"].get(head)))


def train(
    events: Annotated[
        Path,
        typer.Option(
            "--events", exists=True, dir_okay=False, help="Events, JSON lines (the contract)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", exists=True, dir_okay=False, help="Label episodes, JSON lines."),
    ] = None,
    feedback: Annotated[
        Path | None,
        typer.Option(
            "--feedback", exists=True, dir_okay=False, help="Delayed feedback (chargebacks)."
        ),
    ] = None,
    preset: Annotated[Preset, typer.Option("--preset", help="Model size.")] = Preset.small,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init", exists=True, file_okay=False, help="Local Hugging Face BERT to start from."
        ),
    ] = None,
    seed: SeedOpt = 0,
    target_precision: Annotated[
        float | None,
        typer.Option(
            "--target-precision",
            min=0.0,
            max=1.0,
            help="Threshold: lowest score reaching this precision on validation.",
        ),
    ] = None,
    target_fpr: Annotated[
        float | None,
        typer.Option(
            "--target-fpr",
            min=0.0,
            max=1.0,
            help="Threshold: lowest score keeping the event FPR under this.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Pretrain on unlabeled windows, fine-tune both heads, report on the test split.

    Thresholds default to at most 5 normal users alerted per 1,000 per day on validation.
    """
    from training.config import TrainConfig
    from training.exceptions import TrainingError
    from training.train import train as run_train

    if labels is None and feedback is None:
        raise TrainingError("--labels or --feedback: at least one is needed to fine-tune")
    cfg = TrainConfig.for_preset(
        preset.value, seed=seed, target_precision=target_precision, target_fpr=target_fpr
    )
    report = run_train(events, labels, out, cfg, feedback=feedback, init=init, progress=not quiet)
    render_metrics(report, f"Test split → {out}/report.md")
