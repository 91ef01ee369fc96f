"""Thresholds that transfer: from the model they were chosen for to the refit model that ships,
and the promise `train` makes about them, with how sure it is.

`train` chooses thresholds out of time with the selection run, then ships a model refit on
every event: another model, whose scores sit elsewhere (issue 33 measured 2.9 promised, 16.0
seen). `carry_threshold` moves a threshold across as a quantile of normal users' days: on a
reference set both models scored (the normal users' events before the validation period,
which both learnt from), the refit model's threshold alerts the same share of (user, day)
pairs as the selection model's did. `rate_interval` bootstraps the per-user-day alert rate
over users, so the promise says how sure it is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from training.metrics import (
    EvalInput,
    choose_threshold,
    normal_users_alerted_per_1000_per_day,
    user_day_pairs,
)

__all__ = ["carry_threshold", "concat_inputs", "rate_interval"]


def carry_threshold(
    reference: EvalInput, before: npt.NDArray[Any], after: npt.NDArray[Any], head: int,
    threshold: float,
) -> float:  # fmt: skip
    """The threshold on `after` scores that alerts as many normal (user, day) pairs of
    `reference` as `threshold` does on `before` scores (both [N, heads], `reference`'s
    events); ties in `after` may alert fewer, never more."""
    rate = normal_users_alerted_per_1000_per_day(replace(reference, scores=before), head, threshold)
    if rate is None:
        raise ValueError("carry_threshold: no normal users in the reference set")
    return choose_threshold(
        replace(reference, scores=after), head, max_alerted_per_1000_per_day=rate
    )


def rate_interval(
    inp: EvalInput, head: int, threshold: float, *, level: float = 0.9, draws: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:  # fmt: skip
    """A bootstrap interval (over normal users, percentile, seeded) for the normal users
    alerted per 1,000 per day at `threshold`; None without normal users."""
    pairs = user_day_pairs(inp, head)
    if pairs is None:
        return None
    pair_max, pair_user, n_users, span_days = pairs
    alerted = np.bincount(pair_user[pair_max >= threshold], minlength=n_users).astype(np.float64)
    rng = np.random.default_rng(seed)
    # Draws in chunks of ~4M picks: one draws × users array is 0.5 GB at 65,000 users.
    step = max(1, 4_000_000 // n_users)
    sums = np.concatenate([
        alerted[rng.integers(0, n_users, size=(min(step, draws - at), n_users))].sum(axis=1)
        for at in range(0, draws, step)
    ])  # fmt: skip
    rates = sums / (n_users * span_days) * 1000.0
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def concat_inputs(a: EvalInput, b: EvalInput) -> EvalInput:
    """Two scored sets of the same corpus (the same episodes) as one."""
    return EvalInput(
        scores=np.concatenate([a.scores, b.scores]),
        y=np.concatenate([a.y, b.y]),
        weight=np.concatenate([a.weight, b.weight]),
        user_ids=np.concatenate([a.user_ids, b.user_ids]),
        ts_ms=np.concatenate([a.ts_ms, b.ts_ms]),
        episode=np.concatenate([a.episode, b.episode]),
        episodes=a.episodes,
        first_purchase_ms=a.first_purchase_ms,
    )
