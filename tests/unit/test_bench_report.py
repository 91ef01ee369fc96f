"""The pipeline benchmark's report: targets judged from the figures, tables and plots written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from riskstream.bench.pipeline.report import quantile_ms, render_markdown, targets, write_report


def _drain(rate: float) -> dict[str, float]:
    return {"events": 10_000, "wall_s": 10_000 / rate, "events_per_s": rate, "mean_batch": 200.0,
            "redis_ms_per_batch": 5.0, "inference_ms_per_batch": 20.0}  # fmt: skip


def _result(pipeline: float, model: float, transport: float, p99_ms: float) -> dict[str, Any]:
    latencies = sorted([p99_ms / 2] * 98 + [p99_ms] * 2)
    level = {"percent": 75, "offered_per_s": 0.75 * pipeline, "duration_s": 20.0,
             "sent": int(15 * pipeline), "sustained_per_s": 0.75 * pipeline, "caught_up_s": 0.1,
             "lag": [(0.25, 10.0), (0.5, 40.0)], "alert_latencies_ms": latencies,
             "lag_buckets": [(0.1, 90.0), (0.25, 100.0), (float("inf"), 100.0)]}  # fmt: skip
    figures = {"windows_per_s": model, "batch_p50_ms": 30.0, "batch_p99_ms": 40.0,
               "mean_events_per_window": 20.0}  # fmt: skip
    return {
        "machine": {"cpu": "test cpu", "cores": 2, "python": "3.11"},
        "options": {"batch": 256},
        "bundle": {"model_version": "v1", "preset": "tiny", "variant": "int8", "max_events": 32},
        "events": 1_000_000,
        "model": figures,
        "redis": {"events_per_s": 50_000.0, "batch_p50_ms": 5.0, "batch_p99_ms": 9.0},
        "transport": _drain(transport),
        "pipeline": _drain(pipeline),
        "levels": [level],
        "cost_vs_n": [
            {
                "n": n,
                "model": {**figures, "windows_per_s": model * 32 / n},
                "redis": {"events_per_s": 50_000.0 * 32 / n, "batch_p50_ms": 5.0},
            }
            for n in (16, 64)
        ],
        "cost_vs_batch": [{"batch": 256, "model": figures, "pipeline": _drain(pipeline)}],
        "quality": [
            {
                "preset": "tiny",
                "variant": "int8",
                "events_per_s": pipeline,
                "fraud_pr_auc": 0.95,
                "abnormal_click_pr_auc": 0.99,
            }
        ],
    }


def test_targets_are_judged_from_the_measured_figures() -> None:
    met = {t["target"]: t["met"] for t in targets(_result(6_000, 9_000, 12_000, 200))}
    assert all(met.values())
    missed = [t for t in targets(_result(4_000, 9_000, 12_000, 300)) if not t["met"]]
    assert [t["target"][:6] for t in missed] == ["≥ 5,00", "p99 ev", "pipeli"]
    assert "4,000 events/s" in missed[0]["measured"]
    assert "300 ms" in missed[1]["measured"]
    assert "44% of 9,000/s" in missed[2]["measured"]  # the model is the lower ceiling here


def test_quantiles_are_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert quantile_ms(values, 0.99) == 99.0
    assert quantile_ms(values, 0.5) == 50.0
    assert quantile_ms([7.0], 0.99) == 7.0


def test_report_files_hold_the_tables_and_plots(tmp_path: Path) -> None:
    written = write_report(_result(6_000, 9_000, 12_000, 200), tmp_path)
    assert [p.name for p in written] == ["pipeline.json", "pipeline.md", "throughput_vs_load.png",
                                         "latency_cdf.png", "lag.png", "cost.png"]  # fmt: skip
    for path in written[2:]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = render_markdown(_result(6_000, 9_000, 12_000, 200))
    assert "| 75 % | 4,500 | 4,500 | 40 | 0.1 s | 100 | 100 / 100 / 200 | ≤ 250 ms |" in text
    assert "| tiny | int8 | 6,000 | 0.9500 | 0.9900 |" in text
