"""Training-side subcommands: `simulate`, `train` (`evaluate` lives in export/cli.py: it also
scores bundles).

torch is imported inside `train` and `evaluate` only, so the other commands stay light.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from events.outputs import check_output
from simulator import (
    ATTACK_KINDS,
    ATTACK_PRESETS,
    KIND_LABEL,
    WorldConfig,
    WorldSummary,
    simulate_world,
)
from simulator.exceptions import SimulationError

__all__ = [
    "DaysOpt",
    "Format",
    "SeedOpt",
    "UsersOpt",
    "ingest",
    "pretrain",
    "render_ingest",
    "render_metrics",
    "render_summary",
    "simulate",
    "thin_labels",
    "train",
]

if TYPE_CHECKING:
    from training.ingest import IngestReport

_out = Console()
_err = Console(stderr=True, highlight=False)


def render_summary(summary: WorldSummary, out_dir: Path) -> None:
    """Print the world's numbers as tables."""
    world = Table(title=f"Simulated world → {out_dir}", show_header=False)
    world.add_column("what", overflow="fold")
    world.add_column("value", justify="right", overflow="fold")
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
    episodes.add_column("label", overflow="fold")
    episodes.add_column("kind", overflow="fold")
    episodes.add_column("episodes", justify="right", overflow="fold")
    for kind in sorted(summary.episodes_per_kind):
        episodes.add_row(KIND_LABEL[kind], kind, f"{summary.episodes_per_kind[kind]:,}")
    _out.print(episodes)

    types = Table(title="Events by type")
    types.add_column("type", overflow="fold")
    types.add_column("events", justify="right", overflow="fold")
    types.add_column("share", justify="right", overflow="fold")
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


class Format(StrEnum):
    """How `simulate` writes the world."""

    jsonl = "jsonl"
    parquet = "parquet"


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
AttacksOpt = Annotated[
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
    attacks: AttacksOpt = "all",
    only_attack: OnlyOpt = None,
    format_: Annotated[
        Format,
        typer.Option(
            "--format",
            help="jsonl: events.jsonl, labels.jsonl, feedback.jsonl; parquet: the dataset "
            "`riskstream ingest` writes (events/ partitioned by day and user bucket, labels and "
            "feedback beside).",
        ),
    ] = Format.jsonl,
) -> None:
    """Simulate a labelled e-commerce world: events.jsonl, labels.jsonl, feedback.jsonl (or,
    with --format parquet, a columnar dataset)."""
    check_output(out, "--out", folder=True)
    config = _config(users, days, seed, attack_share, no_attack or [], attacks, only_attack)
    if format_ is Format.parquet:
        summary = _simulate_dataset(config, out, not quiet)
    else:
        summary = simulate_world(config, out, progress=not quiet)
    render_summary(summary, out)
    for warning in thin_labels(summary):
        _err.print(f"warning: {warning}", markup=False, soft_wrap=True)


def _simulate_dataset(config: WorldConfig, out: Path, progress: bool) -> WorldSummary:
    """The world's JSON lines, written to a scratch folder and ingested into `out`."""
    import tempfile

    from training.ingest import ingest as run_ingest

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".simulate-", dir=out) as tmp:
        where = Path(tmp)
        summary = simulate_world(config, where, progress=progress)
        run_ingest(
            where / "events.jsonl",
            out,
            labels=where / "labels.jsonl",
            feedback=where / "feedback.jsonl",
            progress=progress,
            allow=[where.name],
        )
    return summary


def render_ingest(report: IngestReport) -> None:
    """What `ingest` wrote, and what it refused, as tables."""
    table = Table(title=f"Ingested → {report.out}", show_header=False)
    table.add_column("what", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    rows = [
        ("lines read", f"{report.lines:,}"),
        ("events written", f"{report.events:,}"),
        ("repeated event ids dropped", f"{report.duplicates:,}"),
        ("rows refused", f"{report.refused:,}"),
        (
            "partitions (days × buckets)",
            f"{report.partitions:,} ({report.days} × {report.buckets})",
        ),
        ("size", f"{report.bytes / 1e6:,.1f} MB"),
        (
            "wall time",
            f"{report.wall_s:.1f} s ({report.lines / max(report.wall_s, 1e-9):,.0f} lines/s)",
        ),
    ]
    for what, value in rows:
        table.add_row(what, value)
    _out.print(table)
    if report.refused:
        refused = Table(title=f"Refused rows (all in {report.out / 'refused.jsonl'})")
        for col in ("file", "row", "field", "error"):
            refused.add_column(col, overflow="fold")
        for row in report.first_refused:
            refused.add_row(row["file"], str(row["row"]), row["field"], row["error"])
        if report.refused > len(report.first_refused):
            refused.add_row("…", "", "", f"{report.refused - len(report.first_refused):,} more")
        _out.print(refused)
        by_field = Table(title="Refused rows by field")
        by_field.add_column("field", overflow="fold")
        by_field.add_column("rows", justify="right", overflow="fold")
        for name, n in sorted(report.refused_by_field.items()):
            by_field.add_row(name, f"{n:,}")
        _out.print(by_field)


def ingest(
    events: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="Events, JSON lines (the contract)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write (or replace).")],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", exists=True, dir_okay=False, help="Label episodes, JSON lines."),
    ] = None,
    feedback: Annotated[
        Path | None,
        typer.Option(
            "--feedback", exists=True, dir_okay=False, help="Delayed feedback, JSON lines."
        ),
    ] = None,
    buckets: Annotated[
        int, typer.Option("--buckets", min=1, max=4096, help="User-hash buckets per day.")
    ] = 16,
    jobs: Annotated[
        int,
        typer.Option("--jobs", min=0, help="Parsing processes (0: one per core)."),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Write events (JSON lines) as a Parquet dataset: partitioned by day, bucketed by user,
    labels and feedback copied beside. Refused rows are counted and listed with their file,
    row and field (refused.jsonl); the same input gives a byte-identical dataset.
    `train`, `pretrain`, `evaluate` and `export --events` read the folder like a file."""
    import os

    from training.ingest import ingest as run_ingest

    check_output(out, "--out", folder=True)
    report = run_ingest(
        events,
        out,
        labels=labels,
        feedback=feedback,
        buckets=buckets,
        jobs=jobs or os.cpu_count() or 1,
        progress=not quiet,
    )
    render_ingest(report)


def thin_labels(summary: WorldSummary, enough: int = 5) -> list[str]:
    """One warning per label with fewer than `enough` episodes: a model cannot be trained or
    judged on it (about 2,000 users × 1 day at the default attack share gives every label
    some; 20,000 × 2 days gives a split with tens of test episodes per label).

    >>> from simulator import WorldSummary
    >>> s = WorldSummary(10, 10, 10, 0, 0, {"card_testing": 7, "scraper": 0}, {}, 1, 0, 0.0, 0, 0.1)
    >>> thin_labels(s)
    ['abnormal_click: 0 episodes in 10 users; train and evaluate need more (try --users 2000)']
    """
    counts: dict[str, int] = {}
    for kind, n in summary.episodes_per_kind.items():
        counts[KIND_LABEL[kind]] = counts.get(KIND_LABEL[kind], 0) + n
    return [
        f"{label}: {n} episodes in {summary.users:,} users; train and evaluate need more "
        "(try --users 2000)"
        for label, n in sorted(counts.items())
        if n < enough
    ]


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
    from training.report import promise_lines, verdict  # matplotlib: only with a report

    table = Table(title=title)
    table.add_column("metric", overflow="fold")
    heads = list(report["heads"])
    cross = report.get("baseline_cross_fitted") or {}
    base_name = report.get("baseline_name") or "baseline"
    for head in heads:
        table.add_column(f"{head}\nmodel", justify="right", overflow="fold")
        table.add_column(f"\n{base_name}", justify="right", overflow="fold")
        if head in cross:
            table.add_column("\ncross-fitted on this set", justify="right", overflow="fold")
    for name, label in _METRICS.items():
        row = [label]
        for head in heads:
            row += [_fmt(report["heads"][head].get(name)), _fmt(report["baseline"][head].get(name))]
            if head in cross:
                row.append(_fmt(cross[head].get(name)))
        table.add_row(*row)
    _out.print(table)
    for head in heads:
        _out.print(verdict(head, report["heads"][head], report["baseline"].get(head)))
    for line in promise_lines(report):
        _out.print(f"promised: {line}")


class Device(StrEnum):
    """Where to train."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


PresetOpt = Annotated[Preset | None, typer.Option("--preset", help="Model size (default: tiny).")]
TrainSeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Random seed: same data and settings, same model.")
]
DeviceOpt = Annotated[
    Device | None,
    typer.Option(
        "--device", help="auto (CUDA when present), cpu or cuda; mixed precision on CUDA."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        exists=True,
        dir_okay=False,
        help="JSON object of training settings (any TrainConfig field).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="A training setting, key=value (repeatable; after --config): --set refit=true.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _train_config(
    preset: Preset | None,
    config: Path | None,
    sets: list[str] | None,
    base: dict[str, Any] | None = None,
    **flags: Any,
) -> Any:
    from training.config import TrainConfig

    return TrainConfig.from_sources(
        preset.value if preset is not None else None,
        base=base,
        config_file=config,
        sets=sets or [],
        **flags,
    )


def train(
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            exists=True,
            help="Events: JSON lines (the contract), or a dataset folder (`riskstream ingest`; "
            "its labels and feedback are used unless given).",
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
    preset: PresetOpt = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            exists=True,
            file_okay=False,
            help="Start from a `riskstream pretrain` folder or a local Hugging Face BERT.",
        ),
    ] = None,
    seed: TrainSeedOpt = None,
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
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the interrupted run in OUT from its last saved epoch."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Train even when a head has no positives in the training or validation split.",
        ),
    ] = False,
    quiet: QuietOpt = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Processes, data-parallel (torch.distributed: gloo on CPU, NCCL on GPUs), "
            "started by torchrun; rank 0 writes OUT.",
        ),
    ] = 1,
) -> None:
    """Pretrain on unlabeled windows, fine-tune both heads, report on the test split.

    Thresholds default to at most 5 normal users alerted per 1,000 per day on validation.
    A head with no positives in the training or validation split is refused before training
    (--force: a warning instead).
    Settings: the preset's, then --config, then each --set, then the options above.
    """
    from training.data import beside
    from training.exceptions import TrainingError
    from training.train import train as run_train

    check_output(out, "--out", folder=True)
    labels, feedback = beside(events, labels, feedback)
    if labels is None and feedback is None:
        raise TrainingError("--labels or --feedback: at least one is needed to fine-tune")
    if nproc > 1:
        _torchrun(
            nproc,
            {
                "--events": events, "--out": out, "--labels": labels, "--feedback": feedback,
                "--preset": preset.value if preset is not None else None, "--init": init,
                "--seed": seed, "--target-precision": target_precision,
                "--target-fpr": target_fpr, "--device": device.value if device else None,
                "--config": config,
            },
            [*(["--resume"] if resume else []), *(["--force"] if force else []),
             *(["--quiet"] if quiet else [])],
            set_ or [],
        )  # fmt: skip
        report_path = out / "report.json"
        import json

        render_metrics(json.loads(report_path.read_text()), f"Test split → {out}/report.md")
        return
    base = _saved_config(out) if resume else None
    cfg = _train_config(
        preset,
        config,
        set_,
        base,
        seed=seed,
        target_precision=target_precision,
        target_fpr=target_fpr,
        device=device.value if device is not None else None,
    )
    report = run_train(
        events,
        labels,
        out,
        cfg,
        feedback=feedback,
        init=init,
        progress=not quiet,
        resume=resume,
        force=force,
    )
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # a rank of --nproc: the launcher shows it
        render_metrics(report, f"Test split → {out}/report.md")


def _torchrun(nproc: int, options: dict[str, Any], flags: list[str], sets: list[str]) -> None:
    """`python -m training train ...` in `nproc` processes on this host, by torchrun; a rank
    that fails (or is killed) stops the others, and this raises."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from training.exceptions import TrainingError

    args = [f"{k}={v}" for k, v in options.items() if v is not None]
    args += [f"--set={s}" for s in sets] + flags
    launch = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--module", "training", "train", *args]
    )
    try:
        run(launch)  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        failures = "; ".join(
            f"rank {r}: exit code {f.exitcode}" for r, f in sorted(exc.failures.items())
        )
        raise TrainingError(f"--nproc {nproc}: the distributed run failed ({failures})") from None


def _saved_config(out: Path) -> dict[str, Any]:
    """The interrupted run's settings (`--resume` starts from them)."""
    import json

    from training.exceptions import TrainingError

    path = out / "resume" / "run.json"
    try:
        saved: dict[str, Any] = json.loads(path.read_text())["run"]["config"]
    except FileNotFoundError:
        raise TrainingError(f"--resume: no interrupted run in {out / 'resume'}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path}: unreadable ({exc})") from None
    return saved


def pretrain(
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            exists=True,
            help="Events, JSON lines or a dataset folder (`riskstream ingest`); no labels needed.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (train --init reads it).")],
    preset: PresetOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Masked-event pretraining on any unlabeled corpus: every user's events, the preset's
    window budget (pretrain_windows, pretrain_epochs). `riskstream train --init OUT` starts
    from the folder it writes and adopts its encoding spec."""
    from training.train import pretrain_corpus

    check_output(out, "--out", folder=True)
    cfg = _train_config(
        preset, config, set_, seed=seed, device=device.value if device is not None else None
    )
    summary = pretrain_corpus(events, out, cfg, progress=not quiet)
    table = Table(title=f"Pretrained → {out}", show_header=False)
    table.add_column("what", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    stats = summary["pretrain"]
    for what, value in (
        ("events (users)", f"{summary['events']:,} ({summary['users']:,})"),
        ("windows", f"{summary['windows']:,}"),
        ("steps", f"{stats['steps']:,}"),
        ("final loss", f"{stats['final_loss']:.4f}"),
        ("device", summary["device"]),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ):
        table.add_row(what, value)
    _out.print(table)
