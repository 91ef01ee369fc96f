"""`BatchController`: batch sizes from the latency budget, the measured cost and the backlog.

Deterministic: each test feeds made-up measurements; nothing is timed.
"""

from __future__ import annotations

import pytest

from stream.latency import SEED_COST_S, BatchController, BatchPlan


def test_first_plan_comes_from_the_seed_cost() -> None:
    c = BatchController(0.200, 1024, 0.020)
    # (200 ms - 20 ms wait) / (2 × 0.5 ms) = 180 events
    assert c.cost_s == SEED_COST_S
    assert c.plan() == BatchPlan(180, 0.020)


def test_the_size_follows_the_measured_cost() -> None:
    c = BatchController(0.200, 4096, 0.020, alpha=1.0)
    c.observe(100, 0.010, full=False)  # 0.1 ms an event
    assert c.plan().max_size == 900  # 180 ms / 0.2 ms
    c.observe(100, 0.100, full=False)  # 1 ms an event
    assert c.plan().max_size == 90


def test_the_cost_is_an_ewma() -> None:
    c = BatchController(0.200, 4096, 0.020, seed_cost_s=0.001, alpha=0.5)
    c.observe(10, 0.0, full=False)  # a batch that took no measurable time
    assert c.cost_s == pytest.approx(0.0005, rel=1e-3)
    c.observe(10, 0.010, full=False)
    assert c.cost_s == pytest.approx(0.00075, rel=1e-3)


def test_it_grows_only_under_backlog_and_falls_back_after() -> None:
    c = BatchController(0.200, 1024, 0.020, alpha=1.0)
    c.observe(100, 0.050, full=False)  # 0.5 ms an event: 180 within the budget
    assert c.plan().max_size == 180
    c.observe(180, 0.090, full=True)  # cut full: arrivals outpace this size
    assert c.plan().max_size == 360
    c.observe(360, 0.180, full=True)
    assert c.plan().max_size == 720
    c.observe(720, 0.360, full=True)
    assert c.plan().max_size == 1024  # the hard maximum
    c.observe(1024, 0.512, full=True)
    assert c.plan().max_size == 1024
    c.observe(300, 0.150, full=False)  # the backlog is gone
    assert c.plan().max_size == 180
    assert not c.backlog


def test_an_old_message_counts_as_backlog() -> None:
    c = BatchController(0.200, 1024, 0.020, alpha=1.0)
    c.observe(100, 0.050, full=False, oldest_age_s=0.150)  # within the budget
    assert c.plan().max_size == 180
    c.observe(100, 0.050, full=False, oldest_age_s=0.250)  # over it: waiting already
    assert c.backlog
    assert c.plan().max_size == 360


def test_bounds() -> None:
    slow = BatchController(0.200, 1024, 0.020, min_size=16, alpha=1.0)
    slow.observe(10, 1.0, full=False)  # 100 ms an event: nothing fits, yet batches go on
    assert slow.plan().max_size == 16
    fast = BatchController(0.200, 64, 0.020, alpha=1.0)
    fast.observe(1000, 0.001, full=False)
    assert fast.plan().max_size == 64


def test_the_wait_takes_at_most_a_quarter_of_the_budget() -> None:
    assert BatchController(0.040, 1024, 0.020).plan().wait_s == pytest.approx(0.010)
    assert BatchController(0.200, 1024, 0.020).plan().wait_s == pytest.approx(0.020)


def test_a_zero_budget_gives_the_fixed_batches_of_before() -> None:
    c = BatchController(0, 1024, 0.020, alpha=1.0)
    assert c.plan() == BatchPlan(1024, 0.020)
    c.observe(100, 1.0, full=False, oldest_age_s=99.0)
    assert c.plan() == BatchPlan(1024, 0.020)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"hard_max": 0}, "hard_max"),
        ({"seed_cost_s": 0.0}, "seed_cost_s"),
        ({"alpha": 0.0}, "alpha"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, float], word: str) -> None:
    args: dict[str, float] = {"budget_s": 0.2, "hard_max": 1024, "wait_s": 0.02, **kwargs}
    with pytest.raises(ValueError, match=word):
        BatchController(**args)  # type: ignore[arg-type]
