"""The soak's judgements from samples alone: recovery after a fault, RSS growth per process,
and the report (markdown + PNG) of a made-up run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.bench.soak import (
    SoakOptions,
    faults_for,
    recovery_s,
    rss_growth,
    run_soak,
    write_soak_report,
)


def _bins(values: Sequence[float | None]) -> list[dict[str, Any]]:
    return [{"t_s": 10.0 * i, "p99_s": v} for i, v in enumerate(values)]


def test_recovery_needs_two_bins_in_a_row_back_at_the_level() -> None:
    bins = _bins([0.1] * 6 + [9.0, 0.2, 3.0, 0.2, 0.2, 0.1])
    assert recovery_s(bins, 60.0, 10.0, 120.0) == (0.1, 30.0)


def test_recovery_none_when_not_back_before_the_next_fault_or_without_a_baseline() -> None:
    bins = _bins([0.1] * 6 + [9.0, 9.0, 9.0, 0.1, 0.1])
    assert recovery_s(bins, 60.0, 10.0, 90.0) == (0.1, None)
    assert recovery_s(_bins([None] * 6 + [0.1, 0.1]), 60.0, 10.0, 80.0) == (None, None)


def _sample(t: float, pid: int, rss: float) -> dict[str, Any]:
    return {"t_s": t, "pids": [pid], "rss_mb": rss}


def test_rss_growth_from_minute_5_of_the_run_then_of_each_later_process() -> None:
    samples = [_sample(t, 1, 100 + t / 60) for t in range(0, 600, 60)]
    samples += [_sample(t, 2, 80.0) for t in range(600, 1260, 60)]
    samples += [_sample(1260, 3, 80.0)]
    growth = rss_growth(samples)
    assert growth["1"]["from_t_s"] == 300
    assert growth["1"]["growth"] == pytest.approx((109 - 105) / 105, abs=1e-4)
    assert growth["2"]["from_t_s"] == 900
    assert growth["2"]["growth"] == 0.0
    assert growth["3"]["growth"] is None  # lived < 5 min


def test_faults_for_memory_storage_leave_out_the_broker_restart(tmp_path: Path) -> None:
    assert "broker_restart" not in dict(faults_for("memory"))
    assert "broker_restart" in dict(faults_for("s3"))
    with pytest.raises(PipelineBenchError, match="needs storage s3"):
        run_soak(SoakOptions(bundle=tmp_path, faults=faults_for("s3")))


def test_the_report_of_a_made_up_run(tmp_path: Path) -> None:
    more = {"supervisor_rss_mb": 40.0, "lag": 3, "sent": 10, "produced": 10, "committed": 7}
    samples = [{**_sample(t, 1, 100.0), **more} for t in range(0, 120, 5)]
    result = {
        "machine": {"cpu": "x", "cores": 2}, "load_before": [1.0], "load_after": [1.0],
        "options": {"minutes": 2, "rate": 10, "bin_s": 10, "storage": "memory"},
        "sent": 1200, "produced": 1200, "offered_s": 120.0, "drain_s": 1.0, "alerts_timed": 5,
        "uncommitted": 0, "stalls": 0, "restarts_logged": 1,
        "faults": [{"kind": "worker_sigkill", "at_s": 60.0, "took_s": 0.0,
                    "pre_fault_p99_s": 0.1, "recovered_s": 20.0, "within_60_s": True}],
        "p99_bins": [{"t_s": 10.0 * i, "alerts": 9, "p99_s": 0.1} for i in range(12)],
        "samples": samples, "rss_growth": rss_growth(samples),
        "minutes": [{"minute": 1, "rss_mb": 100.0, "lag_max": 3, "p99_s": 0.1, "alerts": 9,
                     "produced": 10, "committed": 7}],
        "targets": {"nothing_uncommitted": True, "no_stall": True, "rss_growth_max": None,
                    "rss_within_10pct": False, "p99_back_within_60_s": True},
    }  # fmt: skip
    write_soak_report(result, tmp_path)
    md = (tmp_path / "soak.md").read_text()
    assert "| worker_sigkill | 60 | 0.0 | 0.100 | 20 | met |" in md
    assert (tmp_path / "soak.png").stat().st_size > 10_000
