"""`riskstream bench pipeline` end to end at small scale: real broker, Redis and workers.

Figures at this scale mean nothing; what is tested is that every part runs and reports what
it measured: each ceiling, the drained rate, the capacity search's probes (with a rule that
calls any lag and any offered rate bounded, so the probed rates are known: the drained rate,
then 1.25 × it), every load level of that capacity (offered, sustained, caught up, lag
samples), both modes (shared, and isolated with each process on its planned cores, on a host
with 2 cores or more), py-spy's profile of every worker process, cost vs N and batch, quality
per variant, and the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from riskstream.bench.pipeline import PipelineOptions, run_pipeline_bench
from riskstream.bench.pipeline.affinity import BENCH, assign, host_cores, plan_affinity
from riskstream.bench.pipeline.capacity import LagRule

RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"

# The tiny model's training and export (fixtures) count against the limit too.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
ANY_LAG = LagRule(max_lag_s=1e9, max_growth=1e9, min_offered=0.0)


def test_bench_pipeline_measures_every_part(
    tiny_bundle: Path, tiny_world: Path, tmp_path: Path
) -> None:
    isolate = len(host_cores()) >= 2
    opts = PipelineOptions(
        bundle=tiny_bundle, events=tiny_world / "events.jsonl", out=tmp_path / "out",
        loads_pct=(50, 100), duration_s=2.0, drain_events=3_000, window_sizes=(16,),
        batch_sizes=(64,), partitions=4, rules=RULES, processes=(2,), profile=True,
        span_s=2.0, max_probes=2, lag_rule=ANY_LAG, isolate=isolate,
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

    # Two processes only (one process is the same code path with one child): each worker run
    # costs a start, a drain, probes and levels, and this test was the suite's slowest.
    modes = [("shared", 2)]
    if isolate:
        modes += [("isolated", 2)]
        plan = plan_affinity(host_cores())
        assert result["model_isolated"]["windows_per_s"] > 0
        assert result["model_isolated"]["cores"] == list(plan.workers)
    assert [(run["mode"], run["processes"]) for run in result["runs"]] == modes
    for run in result["runs"]:
        n = run["processes"]
        workers = [f"worker {i}" for i in range(n)]
        if run["mode"] == "isolated":  # each process on the cores the plan gave it
            wanted = assign(plan, list(range(n)), ["broker", "redis"])
            assert run["cores"] == {k: list(v) for k, v in wanted.items()}
        else:
            assert run["cores"][BENCH] == host_cores()
        for part in ("transport", "pipeline"):
            assert run[part]["events"] == 3_000
            assert run[part]["events_per_s"] > 0
            assert run[part]["processes"] == n
            assert sorted(k for k in run[part]["cpu"] if k.startswith("worker")) == workers
            assert {"broker", "redis", "bench (load generator)"} <= set(run[part]["cpu"])
        assert run["pipeline"]["inference_ms_per_batch"] > 0  # the real worker scored
        assert run["transport"]["inference_ms_per_batch"] == 0  # the null one did not

        drained = run["pipeline"]["events_per_s"]
        search = run["capacity"]
        assert [p["offered_per_s"] for p in search["probes"]] == pytest.approx(
            [drained, 1.25 * drained]
        )
        for probe in search["probes"]:
            assert probe["bounded"]
            assert probe["sustained_per_s"] > 0
            assert probe["lag"]
            assert sorted(k for k in probe["cpu"] if k.startswith("worker")) == workers
        capacity = search["capacity_per_s"]
        assert capacity == pytest.approx(1.25 * drained)
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
    # no one-process run among them: the sweeps' reference is a one-process drain of its own
    assert result["pipeline"]["processes"] == 1
    assert result["pipeline"]["events"] == 3_000
    assert result["pipeline"]["inference_ms_per_batch"] > 0
    assert sorted(os.sched_getaffinity(0)) == host_cores()  # this process: every core again

    assert [c["n"] for c in result["cost_vs_n"]] == [16]
    assert [c["batch"] for c in result["cost_vs_batch"]] == [64]
    assert result["cost_vs_batch"][0]["pipeline"]["mean_batch"] <= 64
    variants = [q["variant"] for q in result["quality"]]
    assert sorted(variants) == ["fp32", "int8"]
    assert all(q["events_per_s"] > 0 and q["fraud_pr_auc"] for q in result["quality"])
    report = (tmp_path / "out" / "pipeline.md").read_text()
    assert "## Targets" in report
    assert "## Sustained capacity" in report
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
