"""The evaluation report a person reads: `report.md` (tables, verdicts) and `pr_curves.png`.

The caller writes `report.json` itself; this module only renders the same dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import matplotlib
import numpy as np
import numpy.typing as npt

matplotlib.use("Agg")  # headless: training machines and CI have no display
import matplotlib.pyplot as plt

__all__ = ["write_report"]

# Preferred row order of the metric tables; other scalar keys follow alphabetically.
_ORDER: Final = (
    "pr_auc",
    "roc_auc",
    "recall_at_fpr_0.001",
    "recall_at_fpr_0.01",
    "threshold",
    "precision",
    "recall",
    "episode_recall",
    "caught_before_purchase",
    "normal_users_alerted_per_1000_per_day",
    "median_detection_delay_events",
    "median_detection_delay_s",
    "positives",
    "events",
)
_TABLE_KEYS: Final = ("episode_recall_by_kind", "classification_report")
_Curve = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _fmt(value: Any) -> str:
    """A cell: None → n/a, floats to 4 significant digits, big counts with separators."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if v != v:  # NaN
            return "n/a"
        if v.is_integer() and abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts as dotted keys, so free-form sections render as one two-column table."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _scalar_keys(*metrics: Mapping[str, Any]) -> list[str]:
    keys = {k for m in metrics for k, v in m.items() if k not in _TABLE_KEYS}
    ordered = [k for k in _ORDER if k in keys]
    return ordered + sorted(keys - set(ordered))


#: PR-AUCs closer than this are a tie: less than one test episode's worth of ranking.
TIE_PR_AUC: Final = 0.0005


def verdict(head: str, model: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> str:
    """One plain sentence: does the model beat the baseline on PR-AUC for this head?"""
    m = model.get("pr_auc")
    b = None if baseline is None else baseline.get("pr_auc")
    if m is None:
        return f"{head}: model PR-AUC is undefined on this set (one class only) — no verdict."
    if baseline is None:
        return f"{head}: model PR-AUC {m:.3f}; no baseline was run."
    if b is None:
        return f"{head}: model PR-AUC {m:.3f} vs baseline undefined — no verdict."
    if abs(m - b) < TIE_PR_AUC:
        return (
            f"{head}: model PR-AUC {m:.5f} vs baseline {b:.5f} — a tie (within {TIE_PR_AUC}): "
            "the model does NOT beat the baseline."
        )
    if m > b:
        return f"{head}: model PR-AUC {m:.4f} vs baseline {b:.4f} — model better by {m - b:.4f}."
    return (
        f"{head}: model PR-AUC {m:.4f} vs baseline {b:.4f} — the model does NOT beat the "
        f"baseline (behind by {b - m:.4f})."
    )


def _by_kind(model: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    mk = model.get("episode_recall_by_kind") or {}
    bk = baseline.get("episode_recall_by_kind") or {}
    kinds = sorted(set(mk) | set(bk))
    if not kinds:
        return []

    def cell(d: Mapping[str, Any], kind: str) -> str:
        if kind not in d:
            return "n/a"
        caught, total = d[kind]
        return f"{caught}/{total} ({caught / total:.0%})" if total else f"{caught}/{total}"

    rows = [[k, cell(mk, k), cell(bk, k)] for k in kinds]
    title = "**Episode recall by kind** (caught/total)"
    return [title, "", *_table(["kind", "model", "baseline"], rows)]


def _classification(name: str, report: Mapping[str, Any] | None) -> list[str]:
    if not report:
        return []
    rows: list[list[str]] = []
    for label, stats in report.items():
        if isinstance(stats, Mapping):
            cells = [_fmt(stats.get(c)) for c in ("precision", "recall", "f1-score", "support")]
            rows.append([str(label), *cells])
        else:  # "accuracy" is a bare number
            rows.append([str(label), "", "", _fmt(stats), ""])
    header = ["class", "precision", "recall", "f1-score", "support (weighted)"]
    return [f"**{name}: classification report at the threshold**", "", *_table(header, rows)]


def promise_lines(report: Mapping[str, Any]) -> list[str]:
    """`train`'s promise per head: normal users alerted per 1,000 per day at the shipped
    thresholds, with its 90 % interval and what it was measured on (none in `evaluate`)."""
    section: Mapping[str, Any] = report.get("thresholds") or {}
    promise: Mapping[str, Any] = section.get("promise") or {}
    lines = []
    for head, p in promise.items():
        rate, interval = p.get("normal_users_alerted_per_1000_per_day"), p.get("interval_90")
        span = f" (90 %: {_fmt(interval[0])}–{_fmt(interval[1])})" if interval else ""
        lines.append(
            f"{head}: {_fmt(rate)} normal users alerted per 1,000 per day{span}, thresholds "
            f"by {section.get('transfer')}, measured on {p.get('measured_on')}"
        )
    return lines


def _markdown(report: Mapping[str, Any]) -> str:
    heads: Mapping[str, Any] = report.get("heads") or {}
    base: Mapping[str, Any] = report.get("baseline") or {}
    lines = ["# riskstream evaluation", "", "## Verdict", ""]
    lines += [f"- {verdict(h, heads[h], base.get(h) if base else None)}" for h in heads]
    lines += ["", "PR curves: `pr_curves.png`.", ""]
    if promised := promise_lines(report):
        lines += ["## Alert rate promised", "", *(f"- {p}" for p in promised), ""]
    name = str(report.get("baseline_name") or "baseline")
    lines.insert(4, f"Baseline: {name}.\n")
    cross: Mapping[str, Any] = report.get("baseline_cross_fitted") or {}
    for head, model in heads.items():
        other: Mapping[str, Any] = base.get(head) or {}
        lines += [f"## {head}", ""]
        rows = [[k, _fmt(model.get(k)), _fmt(other.get(k))] for k in _scalar_keys(model, other)]
        header = ["metric", "model", name]
        if cross.get(head):  # evaluate: a GBDT fitted on the evaluated set itself, as an extra
            header.append("GBDT cross-fitted on this set")
            rows = [[*r, _fmt(cross[head].get(r[0]))] for r in rows]
        lines += _table(header, rows)
        lines += _by_kind(model, other)
        lines += _classification("model", model.get("classification_report"))
        lines += _classification("baseline", other.get("classification_report"))
    for section in ("split", "data", "training"):
        data = report.get(section)
        if isinstance(data, Mapping) and data:
            rows = [[k, _fmt(v)] for k, v in _flatten(data)]
            lines += [f"## {section.capitalize()}", "", *_table(["", "value"], rows)]
    return "\n".join(lines).rstrip() + "\n"


def _plot(
    report: Mapping[str, Any], curves: Mapping[str, Mapping[str, _Curve]], path: Path
) -> None:
    heads = list(curves) or list(report.get("heads") or {})
    fig, axes = plt.subplots(1, max(len(heads), 1), figsize=(6 * max(len(heads), 1), 5))
    axes_list = list(np.atleast_1d(axes))
    try:
        for ax, head in zip(axes_list, heads, strict=False):
            for source, key, color in (("model", "heads", "C0"), ("baseline", "baseline", "C1")):
                metrics = (report.get(key) or {}).get(head) or {}
                curve = curves.get(head, {}).get(source)
                if curve is None:
                    continue
                precision, recall = curve
                auc = metrics.get("pr_auc")
                label = f"{source} (PR-AUC {auc:.3f})" if auc is not None else source
                ax.plot(recall, precision, color=color, label=label, drawstyle="steps-post")
                p, r = metrics.get("precision"), metrics.get("recall")
                if p is not None and r is not None:  # the operating point at the threshold
                    thr = metrics.get("threshold")
                    at = f"{source} @ threshold {thr:.3g}" if thr is not None else None
                    ax.plot([r], [p], "o", color=color, markersize=8, label=at)
            ax.set(title=head, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def write_report(
    report: Mapping[str, Any],
    out_dir: Path,
    curves: Mapping[str, Mapping[str, _Curve]],
) -> list[Path]:
    """Write `report.md` and `pr_curves.png` into `out_dir`; return their paths.

    `report` is the dict of report.json (`heads`, `baseline`, `split`, `data`, `training`);
    `curves[head]["model" | "baseline"] = (precision, recall)` as `metrics.pr_curve` gives.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(_markdown(report), encoding="utf-8")
    png = out_dir / "pr_curves.png"
    _plot(report, curves, png)
    return [md, png]
