"""`riskstream export`, `riskstream score` and `riskstream evaluate` (checkpoints and bundles).

torch is imported only by an export or a checkpoint's evaluation itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from events.outputs import check_output
from export.exceptions import ExportError

__all__ = ["evaluate", "export", "score"]

_out = Console()


def _render_manifest(out: Path) -> None:
    from export.manifest import read_manifest

    manifest = read_manifest(out)
    table = Table(title=f"Bundle {out} — model {manifest.model_version}")
    table.add_column("variant", overflow="fold")
    table.add_column("file", overflow="fold")
    table.add_column("usable", overflow="fold")
    table.add_column("verification", overflow="fold")
    for name, variant in manifest.variants.items():
        table.add_row(name, variant.file, "yes" if variant.verified else "NO", variant.check)
    if manifest.ensemble:  # every variant's scores are blended with the trees'
        ens = manifest.ensemble
        table.add_row("+ GBDT", str(ens.get("gbdt")), "yes", str(ens.get("check")))
    _out.print(table)
    if manifest.calibration:
        _out.print(_calibration_table(manifest.calibration))


def _calibration_table(calibration: dict[str, Any]) -> Table:
    """Per head: from which score alerts are critical / high, and the shortest window alerting
    (measured on validation at training; docs/alerts.md)."""

    def cut(value: Any) -> str:
        return f"≥ {value:.4g}" if isinstance(value, int | float) else "never"

    table = Table(title="Severity and short windows (measured on validation)")
    for col in ("head", "critical", "high", "alerts from", "validation alerts"):
        table.add_column(col, overflow="fold")
    for head, entry in calibration.items():
        measured = entry.get("measured", {}).get("all", {})
        precision = measured.get("precision")
        seen = f"{measured.get('alerts', 0)} cases" + (
            f", {precision:.0%} true" if isinstance(precision, int | float) else ""
        )
        events = int(entry.get("min_events", 3))
        table.add_row(head, cut(entry.get("critical_from")), cut(entry.get("high_from")),
                      f"{events} event{'s' if events > 1 else ''}", seen)  # fmt: skip
    return table


def export(
    model: Annotated[
        Path,
        typer.Option("--model", exists=True, file_okay=False, help="Checkpoint folder (train)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    int8: Annotated[bool, typer.Option("--int8", help="Also a dynamic INT8 graph (CPU).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also an FP16 graph (GPU).")] = False,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            exists=True,
            help="Verify on these events, JSON lines or an ingested dataset folder (default: "
            "the checkpoint's training data, its validation users).",
        ),
    ] = None,
    labels: Annotated[Path | None, typer.Option("--labels", exists=True, dir_okay=False)] = None,
    feedback: Annotated[
        Path | None, typer.Option("--feedback", exists=True, dir_okay=False)
    ] = None,
    windows: Annotated[
        int, typer.Option("--windows", min=1000, help="Parity windows to verify on.")
    ] = 2048,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Export a checkpoint to a verified ONNX bundle."""
    from export.build import ExportOptions
    from export.build import export as run_export

    check_output(out, "--out", folder=True)
    options = ExportOptions(
        int8=int8,
        fp16=fp16,
        events=events,
        labels=labels,
        feedback=feedback,
        windows=windows,
        force=force,
        progress=not quiet,
    )
    run_export(model, out, options)
    _render_manifest(out)


def score(
    bundle: Annotated[Path, typer.Option("--bundle", exists=True, file_okay=False)],
    events: Annotated[Path, typer.Option("--events", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="scores.jsonl to write.")],
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    variant: Annotated[
        str | None, typer.Option("--variant", help="fp32, int8 or fp16 (default: auto).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=65536)] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Score every event of a file with a bundle, the way the stream worker does."""
    from export.loader import load_bundle
    from export.score import score_file

    check_output(out, "--out")
    if device not in ("auto", "cpu", "cuda"):
        raise ExportError(f"--device: {device!r} is not one of auto, cpu, cuda")
    loaded = load_bundle(bundle, device, variant=variant)  # type: ignore[arg-type]
    summary = score_file(loaded, events, out, batch_size=batch_size, progress=not quiet)
    _out.print(
        f"scored {summary.scored:,} of {summary.lines:,} events with {loaded.variant} on "
        f"{loaded.provider} → {out} ({summary.refused:,} refused, "
        f"{summary.duplicates:,} redelivered)"
    )


def evaluate(
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            exists=True,
            file_okay=False,
            help="Checkpoint folder from train, or a bundle folder from export.",
        ),
    ],
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            exists=True,
            help="Events: JSON lines, or a dataset folder (`riskstream ingest`; its labels and "
            "feedback are used unless given).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="report.json to write.")],
    labels: Annotated[Path | None, typer.Option("--labels", exists=True, dir_okay=False)] = None,
    feedback: Annotated[
        Path | None, typer.Option("--feedback", exists=True, dir_okay=False)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Score every event of a data set and report against its labels."""
    from export.score import bundle_scorer
    from training.cli import render_metrics
    from training.data import beside
    from training.evaluate import evaluate_model
    from training.exceptions import TrainingError

    check_output(out, "--out")
    labels, feedback = beside(events, labels, feedback)
    if labels is None and feedback is None:
        raise TrainingError("--labels or --feedback: at least one is needed to evaluate")
    scorer = bundle_scorer(model) if (model / "manifest.json").is_file() else None
    report = evaluate_model(
        model, events, labels, out, feedback=feedback, progress=not quiet, scorer=scorer
    )
    render_metrics(report, f"Evaluation → {out}")
