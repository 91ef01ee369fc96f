"""The pipeline benchmark's sustained-capacity search and isolated mode's affinity plan:
pure functions over made-up hosts and core lists (no broker, no timing)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from riskstream.bench.pipeline import affinity
from riskstream.bench.pipeline.affinity import BENCH, AffinityPlan, assign, plan_affinity
from riskstream.bench.pipeline.capacity import LagRule, Probe, judge, search_capacity
from riskstream.bench.pipeline.exceptions import PipelineBenchError


def _host(limit: float, calls: list[float]) -> Callable[[float], Probe]:
    """A host that keeps up with any rate up to `limit` and sustains `limit` beyond it."""

    def measure(rate: float) -> Probe:
        calls.append(rate)
        ok = rate <= limit
        return Probe(rate, min(rate, limit), 0.0 if ok else 9e9, 0.0, ok, "" if ok else "lag")

    return measure


def _lag(
    rate_in: float, rate_out: float, span: float, base: float = 0.0
) -> list[tuple[float, float]]:
    """Lag samples every 0.25 s of a worker taking `rate_out` of `rate_in` offered."""
    return [
        (t / 4, base + max(0.0, rate_in - rate_out) * t / 4) for t in range(1, int(span * 4) + 1)
    ]


# -- judge: the verdict on one probe's lag samples --


def test_a_probe_whose_lag_stays_small_is_bounded() -> None:
    probe = judge(1_000, 1_000, _lag(1_000, 1_000, 60, base=200), 60)
    assert probe.bounded
    assert probe.why == ""
    assert probe.end_lag == 200


def test_a_growing_backlog_is_unbounded_even_while_it_is_still_short() -> None:
    # 5 % more offered than processed: after 60 s the lag is 3 s of the rate (end), and
    # after 30 s (a 30 s span) only 1.5 s, under the end limit but growing.
    long = judge(1_000, 950, _lag(1_000, 950, 60), 60)
    assert not long.bounded
    assert "end lag" in long.why
    short = judge(1_000, 950, _lag(1_000, 950, 30), 30)
    assert not short.bounded
    assert "growing" in short.why
    assert "end lag" not in short.why
    assert short.growth_per_s == pytest.approx(50)


def test_a_small_lag_that_wobbles_is_noise_not_growth() -> None:
    # A batch in flight: up to 0.2 s of the rate, rising over the second half.
    samples = [(t / 4, 10.0 * t) for t in range(1, 21)]  # 10 → 200 messages at 1,000/s
    assert judge(1_000, 1_000, samples, 5).bounded
    assert not judge(1_000, 1_000, samples, 5, LagRule(noise_s=0.1)).bounded


def test_a_rate_the_load_generator_could_not_offer_is_not_bounded() -> None:
    # The lag stayed small because only 1,300 of the 2,000/s asked for went out.
    flat = _lag(1_300, 1_300, 20, base=100)
    behind = judge(2_000, 1_300, flat, 20, sent_per_s=1_300)
    assert not behind.bounded
    assert behind.why == "only 1,300/s offered (load generator behind)"
    assert behind.sent_per_s == 1_300
    assert judge(2_000, 1_950, flat, 20, sent_per_s=1_950).bounded  # within 5 %
    assert judge(2_000, 1_300, flat, 20).bounded  # not known: judged on the lag alone
    assert behind.load_limited  # the lag alone was fine: the worker was not judged
    growing = judge(2_000, 1_000, _lag(1_300, 1_000, 20), 20, sent_per_s=1_300)
    assert not growing.bounded  # the worker fell behind too
    assert not growing.load_limited


def test_a_rate_the_load_generator_could_not_offer_ends_the_search_at_a_lower_bound() -> None:
    """Never the generator's ceiling taken for the worker's: 2,500/s bounded, 3,125 not offered."""
    calls: list[float] = []

    def measure(rate: float) -> Probe:
        calls.append(rate)
        sent = min(rate, 2_600.0)
        return judge(rate, sent, _lag(sent, sent, 20), 20, sent_per_s=sent)

    search = search_capacity(measure, 2_000, max_probes=6)
    assert calls == [2_000, 2_500, 3_125]
    assert search.capacity_per_s == 2_500
    assert search.load_limited


def test_samples_after_the_span_are_not_judged() -> None:
    samples = [*_lag(1_000, 1_000, 10), (11.0, 50_000.0), (12.0, 0.0)]  # then the catch-up
    assert judge(1_000, 1_000, samples, 10).bounded
    with pytest.raises(ValueError, match="no lag sample"):
        judge(1_000, 1_000, [(11.0, 0.0)], 10)


# -- search_capacity: which rates are probed, what is found --


def test_search_bisects_down_from_an_overloaded_drain_rate() -> None:
    calls: list[float] = []
    search = search_capacity(_host(3_000, calls), 4_000, max_probes=5, precision=0.05)
    # 4,000 fails (sustained 3,000) → 95 % of that → bisect between 2,850 and 4,000 …
    assert calls[:3] == [4_000, pytest.approx(2_850), pytest.approx(3_425)]
    assert len(calls) == 5
    assert search.capacity_per_s is not None
    assert 2_850 <= search.capacity_per_s <= 3_000
    assert [p.offered_per_s for p in search.probes] == calls


def test_search_steps_up_while_bounded_then_bisects() -> None:
    calls: list[float] = []
    search = search_capacity(_host(5_500, calls), 4_000, max_probes=4)
    assert calls[:3] == [4_000, 5_000, 6_250]
    assert calls[3] == pytest.approx(5_625)  # between 5,000 (ok) and 6,250
    assert search.capacity_per_s == 5_000


def test_search_stops_once_the_bracket_is_within_precision() -> None:
    calls: list[float] = []
    search = search_capacity(_host(2_000, calls), 2_100, max_probes=10, precision=0.1)
    # 2,100 fails → 1,900 holds (2,100 is 11 % above: not within 10 %) → 2,000 holds: done.
    assert calls == [2_100, pytest.approx(1_900), pytest.approx(2_000)]
    assert search.capacity_per_s == pytest.approx(2_000)


def test_search_with_nothing_bounded_finds_no_capacity() -> None:
    calls: list[float] = []
    search = search_capacity(_host(0.0, calls), 1_000, max_probes=3)
    assert search.capacity_per_s is None
    assert calls == [1_000, 500, 250]  # each guess at least half the lowest overload
    with pytest.raises(ValueError, match="must be positive"):
        search_capacity(_host(1.0, []), 0, max_probes=3)


def test_a_bounded_rate_above_an_unbounded_one_still_ends_the_search() -> None:
    verdicts = {1_000.0: False, 950.0: True}  # noise: 950 bounded after 1,000 failed

    def measure(rate: float) -> Probe:
        ok = verdicts.get(rate, True)
        return Probe(rate, 1_000.0, 0.0, 0.0, ok, "")

    search = search_capacity(measure, 1_000, max_probes=6, precision=0.1)
    assert [p.offered_per_s for p in search.probes] == [1_000, 950]
    assert search.capacity_per_s == 950


# -- the affinity plan --


def test_two_cores_put_the_worker_on_the_second_and_the_rest_on_the_first() -> None:
    plan = plan_affinity([0, 1])
    assert plan == AffinityPlan(services=(0,), workers=(1,))
    assigned = assign(plan, [101, 102], ["broker", "redis"])
    assert assigned == {"worker 0": (1,), "worker 1": (1,), "broker": (0,), "redis": (0,),
                        BENCH: (0,)}  # fmt: skip


def test_enough_worker_cores_give_each_worker_process_its_own() -> None:
    plan = plan_affinity([3, 2, 1, 0, 7, 6, 5, 4])  # any order, as the OS lists them
    assert plan.services == (0, 1)
    assert plan.workers == (2, 3, 4, 5, 6, 7)
    assigned = assign(plan, [11, 12], ["broker"])
    assert assigned["worker 0"] == (2,)
    assert assigned["worker 1"] == (3,)
    assert assigned["broker"] == assigned[BENCH] == (0, 1)
    shared = assign(plan_affinity([0, 1, 2]), [11, 12, 13], [])
    assert shared["worker 2"] == (1, 2)  # more processes than worker cores: they share them


def test_one_core_is_refused_with_one_line() -> None:
    with pytest.raises(PipelineBenchError, match="--isolate needs at least 2 cores") as err:
        plan_affinity([0])
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineBenchError):
        plan_affinity([])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity")
def test_pinning_sets_every_thread_and_reports_the_cores() -> None:
    import threading

    cores = affinity.host_cores()
    one = cores[-1:]
    seen: list[set[int]] = []
    started = threading.Event()
    stop = threading.Event()

    def idle() -> None:
        started.set()
        stop.wait(10)
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=idle)
    thread.start()
    started.wait(10)
    try:
        assert affinity.pin(os.getpid(), one) == one
    finally:
        stop.set()
        thread.join()
        affinity.pin(os.getpid(), cores)
    assert seen == [set(one)]  # a thread started before the pin was moved too
    assert sorted(os.sched_getaffinity(0)) == cores
    assert affinity.pin(2**22 + 12_345, one) is None  # no such process: not pinned, no error


def test_the_cli_refuses_isolate_on_one_core_in_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from riskstream.command import main

    monkeypatch.setattr(affinity, "host_cores", lambda: [0])
    argv = ["bench", "pipeline", "--bundle", str(tmp_path), "--isolate", "--out",
            str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --isolate needs at least 2 cores (this host gives the benchmark 1): run "
        "without --isolate"
    )
    assert not (tmp_path / "out" / "pipeline.json").exists()
