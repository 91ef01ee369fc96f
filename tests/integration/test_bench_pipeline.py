"""`riskstream bench pipeline` end to end at small scale: real broker, Redis and workers.

Figures at this scale mean nothing; what is tested is that every part runs and reports what
it measured: each ceiling, the drained capacity, every load level (offered, sustained, caught
up, lag samples), py-spy's profile of every worker process, cost vs N and batch, quality per
variant, and the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from riskstream.bench.pipeline import PipelineOptions, run_pipeline_bench

RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"

# The tiny model's training and export (fixtures) count against the limit too.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def test_bench_pipeline_measures_every_part(
    tiny_bundle: Path, tiny_world: Path, tmp_path: Path
) -> None:
    opts = PipelineOptions(
        bundle=tiny_bundle, events=tiny_world / "events.jsonl", out=tmp_path / "out",
        loads_pct=(50, 100), duration_s=2.0, drain_events=3_000, window_sizes=(16,),
        batch_sizes=(64,), partitions=4, rules=RULES, processes=(1, 2), profile=True,
    )  # fmt: skip
    result = run_pipeline_bench(opts)

    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["cost.png", "lag.png", "latency_cdf.png", "pipeline.json", "pipeline.md",
                     "profiles", "throughput_vs_load.png"]  # fmt: skip
    assert (
        json.loads((tmp_path / "out" / "pipeline.json").read_text())["events"] == result["events"]
    )
    assert result["model"]["windows_per_s"] > 0
    assert result["redis"]["events_per_s"] > 0
    assert result["model_host"]["processes"] == 2
    assert len(result["model_host"]["each"]) == 2
    assert result["redis_host"]["events_per_s"] > 0
    assert result["parse_encode"]["parse_encode_per_event"] > 0

    assert [run["processes"] for run in result["runs"]] == [1, 2]
    for run in result["runs"]:
        n = run["processes"]
        workers = [f"worker {i}" for i in range(n)]
        for part in ("transport", "pipeline"):
            assert run[part]["events"] == 3_000
            assert run[part]["events_per_s"] > 0
            assert run[part]["processes"] == n
            assert sorted(k for k in run[part]["cpu"] if k.startswith("worker")) == workers
            assert {"broker", "redis", "bench (load generator)"} <= set(run[part]["cpu"])
        assert run["pipeline"]["inference_ms_per_batch"] > 0  # the real worker scored
        assert run["transport"]["inference_ms_per_batch"] == 0  # the null one did not

        capacity = run["pipeline"]["events_per_s"]
        assert [lv["percent"] for lv in run["levels"]] == [50, 100]
        for lv in run["levels"]:
            assert lv["offered_per_s"] == pytest.approx(capacity * lv["percent"] / 100)
            assert lv["sent"] == int(lv["offered_per_s"] * 2.0)
            assert lv["sustained_per_s"] > 0
            assert lv["caught_up_s"] is not None  # every offered event was processed
            assert lv["lag"]
            assert lv["lag_buckets"][-1][1] == lv["sent"]  # every event's lag, every process
            assert sorted(k for k in lv["cpu"] if k.startswith("worker")) == workers
        for span in (run["pipeline"], *run["levels"]):
            _assert_profiled(span["profile"], workers, tmp_path / "out" / "profiles")
        scored = [lv["profile"]["processes"][w]["busy"]["batch"] for lv in run["levels"]
                  for w in workers]  # fmt: skip
        assert max(scored) > 0  # the batch thread was seen at work under load
    assert result["pipeline"] == result["runs"][0]["pipeline"]

    assert [c["n"] for c in result["cost_vs_n"]] == [16]
    assert [c["batch"] for c in result["cost_vs_batch"]] == [64]
    assert result["cost_vs_batch"][0]["pipeline"]["mean_batch"] <= 64
    variants = [q["variant"] for q in result["quality"]]
    assert sorted(variants) == ["fp32", "int8"]
    assert all(q["events_per_s"] > 0 and q["fraud_pr_auc"] for q in result["quality"])
    report = (tmp_path / "out" / "pipeline.md").read_text()
    assert "## Targets" in report
    assert "## Where the time goes (py-spy" in report


def _assert_profiled(profile: dict[str, Any], workers: list[str], folder: Path) -> None:
    """py-spy sampled each worker and charged every busy sample to one part."""
    assert sorted(profile["processes"]) == workers
    for summary in profile["processes"].values():
        assert summary["ticks"] > 0
        assert sum(summary["parts"].values()) == pytest.approx(
            sum(summary["busy"].values()), abs=1e-3
        )
        assert 0 <= summary["busy"]["event loop"] <= 1  # one thread: at most the whole span
        assert (folder / summary["file"]).stat().st_size > 0
    assert profile["py_spy_cores"] >= 0
