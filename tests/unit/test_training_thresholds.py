"""Thresholds that transfer (training/thresholds.py): carrying a threshold to another model as a
quantile of normal users' days, and the promise's bootstrap interval."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from training.config import TrainConfig
from training.exceptions import TrainingError
from training.metrics import (
    EvalInput,
    choose_threshold,
    normal_users_alerted_per_1000_per_day,
    user_day_pairs,
)
from training.thresholds import carry_threshold, concat_inputs, rate_interval

T0 = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
DAY = 86_400_000


def _world(users: int, days: int, events: int, seed: int, prefix: str = "u") -> EvalInput:
    """`users` normal users, `events` events each per day at random times, scores ~ Beta(1, 30)."""
    rng = np.random.default_rng(seed)
    n = users * days * events
    user = np.repeat(np.arange(users), days * events)
    day = np.tile(np.repeat(np.arange(days), events), users)
    ts = T0 + day * DAY + rng.integers(0, DAY, n)
    scores = rng.beta(1, 30, size=(n, 2))
    return EvalInput(
        scores=scores,
        y=np.zeros((n, 2)),
        weight=np.ones(n),
        user_ids=np.array([f"{prefix}{u}" for u in user], dtype=object),
        ts_ms=ts.astype(np.int64),
        episode=np.full((n, 2), -1, dtype=np.int64),
        episodes=[],
        first_purchase_ms={},
    )


def test_user_day_pairs_make_the_alert_rate() -> None:
    inp = _world(300, 2, 5, seed=1)
    pairs = user_day_pairs(inp, 0)
    assert pairs is not None
    pair_max, pair_user, n_users, span_days = pairs
    assert n_users == 300
    assert len(pair_max) == 600
    assert np.bincount(pair_user).tolist() == [2] * 300  # two days per user
    t = float(np.quantile(pair_max, 0.9))
    expected = np.count_nonzero(pair_max >= t) / (n_users * span_days) * 1000
    assert normal_users_alerted_per_1000_per_day(inp, 0, t) == pytest.approx(expected)


@pytest.mark.parametrize("shift", ["monotone", "noisy"])
def test_carried_threshold_alerts_the_same_share_of_the_reference(shift: str) -> None:
    ref = _world(2000, 2, 10, seed=2)
    before = ref.scores
    rng = np.random.default_rng(3)
    # The refit model scores the same events elsewhere: squashed towards 0, and (noisy) reordered.
    after = before**2 * 0.3
    if shift == "noisy":
        after = after * np.exp(rng.normal(0, 0.5, size=after.shape))
    t = choose_threshold(replace(ref, scores=before), 0)
    carried = carry_threshold(ref, before, after, 0, t)
    rate_before = normal_users_alerted_per_1000_per_day(replace(ref, scores=before), 0, t)
    rate_after = normal_users_alerted_per_1000_per_day(replace(ref, scores=after), 0, carried)
    assert rate_before is not None
    assert rate_before > 0
    assert rate_after == pytest.approx(rate_before)
    # Kept as it was, the old threshold would alert far fewer on the refit scores.
    kept = normal_users_alerted_per_1000_per_day(replace(ref, scores=after), 0, t)
    assert kept is not None
    assert kept < 0.5 * rate_before
    if shift == "monotone":  # the very same (user, day) pairs alert
        a = user_day_pairs(replace(ref, scores=before), 0)
        b = user_day_pairs(replace(ref, scores=after), 0)
        assert a is not None
        assert b is not None
        assert np.array_equal(a[0] >= t, b[0] >= carried)


def test_carry_threshold_refuses_a_reference_without_normal_users() -> None:
    ref = _world(10, 1, 3, seed=4)
    ref = replace(ref, y=np.ones_like(ref.y))
    with pytest.raises(ValueError, match="no normal users"):
        carry_threshold(ref, ref.scores, ref.scores, 0, 0.5)


def test_a_threshold_chosen_on_a_set_realises_its_rate_on_an_iid_copy() -> None:
    chosen_on = _world(20_000, 1, 8, seed=5)
    copy = _world(20_000, 1, 8, seed=6, prefix="v")
    t = choose_threshold(chosen_on, 1)  # ≤ 5 per 1,000 per day
    promised = normal_users_alerted_per_1000_per_day(chosen_on, 1, t)
    seen = normal_users_alerted_per_1000_per_day(copy, 1, t)
    assert promised is not None
    assert seen is not None
    assert 4.5 <= promised <= 5.0
    # ~100 alerted pairs: a Poisson sd of 10 %; 30 % is three of them
    assert seen == pytest.approx(promised, rel=0.3)
    interval = rate_interval(chosen_on, 1, t)
    assert interval is not None
    assert interval[0] <= seen <= interval[1] * 1.3


def test_rate_interval_brackets_the_rate_and_narrows_with_users() -> None:
    small, large = _world(500, 1, 8, seed=7), _world(8000, 1, 8, seed=8)
    t = float(np.quantile(small.scores[:, 0], 0.995))
    widths = []
    for inp in (small, large):
        rate = normal_users_alerted_per_1000_per_day(inp, 0, t)
        interval = rate_interval(inp, 0, t, seed=0)
        assert rate is not None
        assert interval is not None
        assert interval[0] <= rate <= interval[1]
        widths.append(interval[1] - interval[0])
    assert widths[1] < widths[0] / 2
    assert rate_interval(small, 0, t, seed=0) == rate_interval(small, 0, t, seed=0)  # seeded
    assert rate_interval(replace(small, y=np.ones_like(small.y)), 0, t) is None


def test_concat_inputs_pools_two_sets() -> None:
    a, b = _world(50, 1, 2, seed=9), _world(70, 1, 2, seed=10, prefix="v")
    both = concat_inputs(a, b)
    assert len(both.ts_ms) == len(a.ts_ms) + len(b.ts_ms)
    pairs = user_day_pairs(both, 0)
    assert pairs is not None
    assert pairs[2] == 120


def test_threshold_transfer_is_validated() -> None:
    assert TrainConfig(threshold_transfer="refit").threshold_transfer == "refit"
    with pytest.raises(TrainingError, match="threshold_transfer: 'median' is not one of"):
        TrainConfig(threshold_transfer="median")


def test_a_precision_target_ships_the_carried_thresholds_not_a_refit_on_negatives() -> None:
    """The reference set holds normal users only: a precision chosen on it would alert nothing."""
    from typing import Any, cast

    from training.train import Choices, Reference, RefScores, transfer_thresholds

    ref = _world(300, 2, 4, seed=11)
    check = _world(200, 1, 4, seed=12, prefix="c")
    y = (np.random.default_rng(13).random(check.y.shape) < 0.05).astype(np.float64)
    check = replace(check, y=y, scores=check.scores + 0.5 * y)
    cfg = TrainConfig(target_precision=0.5)
    thresholds = {
        head: choose_threshold(check, h, target_precision=0.5)
        for h, head in enumerate(("fraud", "abnormal_click"))
    }
    choices = Choices(
        blend=None, fitted=cast(Any, None), figures={}, thresholds=thresholds,
        model_thresholds=dict(thresholds), calibration={}, check=check, model_alone={},
        chosen_on=check,
    )  # fmt: skip
    after = RefScores(model=ref.scores * 1.1, shipped=ref.scores * 1.1)
    before = RefScores(model=ref.scores, shipped=ref.scores)
    out = transfer_thresholds(cfg, choices, Reference(ref, None), before, after)
    assert out.report["transfer"] == "quantile"
    assert "refit" not in out.report["methods"]
    for h, head in enumerate(("fraud", "abnormal_click")):
        carried = carry_threshold(ref, before.shipped, after.shipped, h, thresholds[head])
        assert out.thresholds[head] == pytest.approx(carried)
        # the selection's threshold alerted some normal days; the carried one does too
        assert (
            normal_users_alerted_per_1000_per_day(
                replace(ref, scores=after.shipped), h, out.thresholds[head]
            )
            > 0
        )
