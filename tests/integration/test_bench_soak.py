"""`riskstream bench soak` at CI scale: 3 minutes of open-loop load on the real worker (under its
supervisor) against a real Tansu and Valkey, with the faults of the full run: Redis restart,
worker SIGTERM, worker SIGKILL (Tansu in memory: fast enough for the load). The broker restart
needs Tansu's `s3://` engine (a moto server) so that records and offsets outlive it; moto holds
Tansu to a few tens of events/s here, so that fault has its own test at 5 events/s.

Asserted as in the full run: every produced event committed at the end, no stall exit (76), the
supervised worker still up and stopping cleanly, each fault injected, every file written.
Speed is not asserted (p99's recovery is reported, not judged: the machine is shared).

RSS: the full run judges growth after minute 5 of the run (≤ 10 %). Nothing in a 3-minute run
is past minute 5, and the first worker process lives only until the SIGTERM at 65 % (~117 s),
so the test judges that process from its minute 1 to its end, with a looser bound (≤ 25 %):
over the first minutes ONNX Runtime's arena, Faust's buffers and the Redis client's pool are
still growing to their working size, which is what the full run's 5-minute grace is for; a
leak of the size the issue saw (144 → 215 MB in 4 minutes, +49 %) still fails it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from riskstream.bench.soak import SoakOptions, faults_for, rss_growth, run_soak

RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"

pytestmark = [
    pytest.mark.integration, pytest.mark.slow, pytest.mark.fault, pytest.mark.timeout(900)
]  # fmt: skip


def test_soak_three_minutes_with_faults(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    opts = SoakOptions(bundle=tiny_bundle, minutes=3.0, rate=150.0, out=out, rules=RULES,
                       workdir=tmp_path / "work")  # fmt: skip
    result = run_soak(opts, progress=True)

    assert sorted(p.name for p in out.iterdir()) == ["soak.json", "soak.md", "soak.png"]
    assert json.loads((out / "soak.json").read_text())["sent"] == result["sent"]
    assert [f["kind"] for f in result["faults"]] == [k for k, _ in faults_for("memory")]
    assert result["sent"] >= 0.95 * 150 * 180  # open loop: the offer kept its rate
    assert result["produced"] >= result["sent"]
    assert result["uncommitted"] == 0, result["samples"][-3:]
    assert result["stalls"] == 0
    assert result["worker_exit"] == 0  # still up at the end, and stopped cleanly
    assert result["restarts_logged"] >= 2  # the SIGTERMed and the SIGKILLed process
    assert result["alerts_timed"] > 0
    assert len(result["minutes"]) >= 3
    first = next(iter(rss_growth(result["samples"], from_s=60.0).values()))
    assert first["growth"] is not None, first
    assert first["growth"] <= 0.25, first
    for fault in result["faults"]:  # reported (not judged on this shared machine)
        print(
            f"[soak] {fault['kind']} at {fault['at_s']:.0f} s: pre-fault p99 "
            f"{fault['pre_fault_p99_s']} s, back after {fault['recovered_s']} s"
        )


def test_soak_broker_restart_on_s3_storage(tiny_bundle: Path, tmp_path: Path) -> None:
    """The broker restart of the soak, on Tansu's S3 engine (moto), at the rate moto allows:
    every event produced before, during (librdkafka's queue) and after is committed in the end,
    no stall exit, the worker never restarted."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("needs moto[server] (the dev extra): S3 storage for a Tansu that survives "
                    "its restart")  # fmt: skip
    opts = SoakOptions(bundle=tiny_bundle, minutes=1.0, rate=5.0, out=tmp_path / "out",
                       rules=RULES, workdir=tmp_path / "work", storage="s3",
                       faults=(("broker_restart", 0.5),))  # fmt: skip
    result = run_soak(opts, progress=True)
    assert [f["kind"] for f in result["faults"]] == ["broker_restart"]
    assert result["produced"] >= result["sent"] >= 0.95 * 5 * 60
    assert result["uncommitted"] == 0, result["samples"][-3:]
    assert result["stalls"] == 0
    assert result["restarts_logged"] == 0
    assert result["worker_exit"] == 0
