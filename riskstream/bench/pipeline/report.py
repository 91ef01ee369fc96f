"""The pipeline benchmark's files: `pipeline.json`, `pipeline.md` and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

import numpy as np

from stream.prometheus import bucket_quantile

__all__ = ["quantile_ms", "render_markdown", "targets", "write_report"]

TARGET_EVENTS_PER_S: Final = 5_000
TARGET_P99_MS: Final = 250.0
TARGET_SHARE: Final = 0.60
_PLOTS: Final = ("throughput_vs_load.png", "latency_cdf.png", "lag.png", "cost.png")


def quantile_ms(sorted_ms: list[float], q: float) -> float | None:
    """The q-quantile of sorted values (nearest rank), None when there are none.

    >>> quantile_ms([1.0, 2.0, 3.0, 4.0], 0.5), quantile_ms([], 0.99)
    (2.0, None)
    """
    if not sorted_ms:
        return None
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets, each with the measured figure and whether it is met."""
    pipeline = r["pipeline"]["events_per_s"]
    ceiling = min(r["model"]["windows_per_s"], r["transport"]["events_per_s"])
    at75 = next((lv for lv in r["levels"] if lv["percent"] == 75), None)
    p99 = quantile_ms(at75["alert_latencies_ms"], 0.99) if at75 else None
    return [
        {"target": f"≥ {TARGET_EVENTS_PER_S:,} events/s, one worker",
         "measured": f"{pipeline:,.0f} events/s", "met": pipeline >= TARGET_EVENTS_PER_S},
        {"target": f"p99 event→alert ≤ {TARGET_P99_MS:.0f} ms at 75 % of capacity",
         "measured": "no alerts" if p99 is None else f"{p99:,.0f} ms",
         "met": p99 is not None and p99 <= TARGET_P99_MS},
        {"target": f"pipeline ≥ {TARGET_SHARE:.0%} of min(model, transport)",
         "measured": f"{pipeline / ceiling:.0%} of {ceiling:,.0f}/s",
         "met": pipeline >= TARGET_SHARE * ceiling},
        {"target": "one Redis round trip per batch", "measured": "1 EVALSHA per batch "
         "(+1 EXISTS pipeline when a score passes a threshold, +1 SET after alerts)",
         "met": True},
    ]  # fmt: skip


def _ms(seconds: float | None) -> str:
    return _n(None if seconds is None else seconds * 1000)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_markdown(r: dict[str, Any]) -> str:
    """The human report: targets, ceilings, open-loop levels, cost and quality tables."""
    m, b = r["machine"], r["bundle"]
    out = [
        "# riskstream bench pipeline",
        "",
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}. Bundle {b['model_version']} "
        f"({b['preset']}, {b['variant']}, N = {b['max_events']}); {r['events']:,} events; "
        f"worker batches of ≤ {r['options']['batch']}.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        *(_row([t["target"], t["measured"], "yes" if t["met"] else "**no**"]) for t in targets(r)),
        "",
        "## Ceilings of the parts, and the pipeline",
        "",
        "| part | events/s | per batch p50 ms | per batch p99 ms |",
        "|---|---:|---:|---:|",
        _row(["model only (ONNX, the stream's windows)", _n(r["model"]["windows_per_s"]),
              _n(r["model"]["batch_p50_ms"], 1), _n(r["model"]["batch_p99_ms"], 1)]),
        _row(["Redis only (window script)", _n(r["redis"]["events_per_s"]),
              _n(r["redis"]["batch_p50_ms"], 1), _n(r["redis"]["batch_p99_ms"], 1)]),
        _row(["transport only (Faust consume → produce)", _n(r["transport"]["events_per_s"]),
              "", ""]),
        _row(["**pipeline** (backlog drained)", f"**{_n(r['pipeline']['events_per_s'])}**",
              "", ""]),
        "",
        f"Pipeline batches: mean {r['pipeline']['mean_batch']:.0f} events, Redis "
        f"{r['pipeline']['redis_ms_per_batch']:.1f} ms and inference "
        f"{r['pipeline']['inference_ms_per_batch']:.1f} ms per batch.",
        "",
        "## Open-loop load",
        "",
        "| load | offered /s | sustained /s | max lag | caught up after | alerts | "
        "event→alert p50 / p95 / p99 ms | event lag p99 (bucket) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for lv in r["levels"]:
        lat = lv["alert_latencies_ms"]
        qs = " / ".join(_n(quantile_ms(lat, q)) for q in (0.5, 0.95, 0.99))
        lag = max((x[1] for x in lv["lag"]), default=0)
        caught = "not within 90 s" if lv["caught_up_s"] is None else f"{lv['caught_up_s']:.1f} s"
        out.append(_row([f"{lv['percent']} %", _n(lv["offered_per_s"]),
                         _n(lv["sustained_per_s"]), _n(lag), caught, len(lat), qs,
                         f"≤ {_ms(bucket_quantile(lv['lag_buckets'], 0.99))} ms"]))  # fmt: skip
    out += ["", "## Cost vs window size N (full windows; model FP32, untrained, same shape)", "",
            "| N | model windows/s | model ms/batch | Redis events/s | Redis ms/batch |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in r["cost_vs_n"]:
        model, rds = c["model"], c["redis"]
        out.append(_row([c["n"], _n(model["windows_per_s"]), _n(model["batch_p50_ms"], 1),
                         _n(rds["events_per_s"]), _n(rds["batch_p50_ms"], 1)]))  # fmt: skip
    out += ["", "## Cost vs batch size", "",
            "| batch | model windows/s | pipeline events/s | mean batch | Redis ms/batch | "
            "inference ms/batch |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in r["cost_vs_batch"]:
        p = c["pipeline"]
        out.append(_row([c["batch"], _n(c["model"]["windows_per_s"]), _n(p["events_per_s"]),
                         _n(p["mean_batch"]), _n(p["redis_ms_per_batch"], 1),
                         _n(p["inference_ms_per_batch"], 1)]))  # fmt: skip
    out += ["", "## Quality vs speed", "",
            "| preset | variant | pipeline events/s | fraud PR-AUC | abnormal_click PR-AUC |",
            "|---|---|---:|---:|---:|"]  # fmt: skip
    for q in r["quality"]:
        out.append(_row([q["preset"], q["variant"], _n(q["events_per_s"]),
                         _n(q["fraud_pr_auc"], 4), _n(q["abnormal_click_pr_auc"], 4)]))  # fmt: skip
    out += ["", "Plots: " + ", ".join(f"`{p}`" for p in _PLOTS) + "."]
    return "\n".join(out) + "\n"


def _plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = r["levels"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    offered = [lv["offered_per_s"] for lv in levels]
    ax.plot(offered, offered, "k:", label="offered")
    ax.plot(offered, [lv["sustained_per_s"] for lv in levels], "o-", label="sustained")
    for name, value, style in (("model only", r["model"]["windows_per_s"], "--"),
                               ("transport only", r["transport"]["events_per_s"], "-."),
                               ("Redis only", r["redis"]["events_per_s"], ":")):  # fmt: skip
        ax.axhline(value, linestyle=style, color="grey", linewidth=1)
        ax.annotate(name, (offered[0], value), fontsize=8, va="bottom")
    ax.set(xlabel="offered events/s", ylabel="events/s", title="Throughput vs offered load")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[0], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for lv in levels:
        lat = lv["alert_latencies_ms"]
        if lat:
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=f"{lv['percent']} %")
    ax.axvline(TARGET_P99_MS, color="red", linestyle=":", linewidth=1)
    ax.set(xlabel="event → alert ms (subscriber's view)", ylabel="share of alerts",
           title="Latency CDF by offered load", xscale="log")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for lv in levels:
        if lv["lag"]:
            t, lag = zip(*lv["lag"], strict=True)
            ax.plot(t, lag, label=f"{lv['percent']} %")
    ax.set(xlabel="s since the offer began", ylabel="consumer lag (messages)",
           title="Consumer lag over time")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[2], dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    ns = [c["n"] for c in r["cost_vs_n"]]
    left.plot(ns, [1e6 / c["model"]["windows_per_s"] for c in r["cost_vs_n"]], "o-", label="model")
    left.plot(ns, [1e6 / c["redis"]["events_per_s"] for c in r["cost_vs_n"]], "s-", label="Redis")
    left.set(xlabel="window size N", ylabel="µs per event", xscale="log", yscale="log",
             title="Cost vs N (full windows)")  # fmt: skip
    left.legend()
    bs = [c["batch"] for c in r["cost_vs_batch"]]
    right.plot(bs, [c["model"]["windows_per_s"] for c in r["cost_vs_batch"]], "o-", label="model")
    right.plot(bs, [c["pipeline"]["events_per_s"] for c in r["cost_vs_batch"]], "s-",
               label="pipeline")  # fmt: skip
    right.set(xlabel="batch size", ylabel="events/s", xscale="log", title="Throughput vs batch")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[3], dpi=120)
    plt.close(fig)


def write_report(r: dict[str, Any], out: Path) -> list[Path]:
    """Write the JSON, the markdown and the plots; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "pipeline.md").write_text(render_markdown(r))
    _plots(r, out)
    return [out / "pipeline.json", out / "pipeline.md", *(out / p for p in _PLOTS)]
