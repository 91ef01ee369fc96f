"""How big the next micro-batch may be: sized by a latency budget from the measured cost.

An event's time in the worker is, at worst, the wait to cut its batch, the rest of the batch
before it (batches fill while the previous one is processed) and its own batch's processing:
`wait + 2 × size × cost`. `BatchController` keeps an EWMA of the cost per event (seconds of
processing / events, per-batch overheads included: it overestimates small batches, the safe
side) and picks the largest size that keeps that sum within the budget. In the pipelined worker
(`stream.pipeline`) a batch's seconds run from its cut to the end of its `finish`, waiting for
the batch before it included: what its events live through, so the bound still holds, while
the throughput is set by the slower of the two stages. Under backlog (the
last batch was cut full, or its oldest message was already older than the budget) the budget
is lost anyway and throughput matters: the size doubles towards the hard maximum, where the
per-batch costs are spread thinnest. Once the backlog is gone it falls back to the budget size.

Pure: no clock, no Faust. The app feeds it each batch's measurements (`observe`) and asks for
the next cut (`plan`); the unit tests drive it with made-up figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["BatchController", "BatchPlan"]

#: Before the first batch: 0.5 ms an event (the default bundle drains ~2,400 events/s on one
#: core, ~0.4 ms): a first guess on the slow side keeps the first batches small.
SEED_COST_S: Final = 0.0005
_ALPHA: Final = 0.2  # EWMA weight of the newest batch: ~5 batches of memory


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The next batch: cut at `max_size` messages or `wait_s` after its first one arrived."""

    max_size: int
    wait_s: float


class BatchController:
    """Next batch size and wait from the budget, the measured cost and the backlog.

    `budget_s` ≤ 0 turns it off: every plan is (`hard_max`, `wait_s`), the fixed batches of
    before.
    """

    def __init__(
        self,
        budget_s: float,
        hard_max: int,
        wait_s: float,
        *,
        min_size: int = 16,
        seed_cost_s: float = SEED_COST_S,
        alpha: float = _ALPHA,
    ) -> None:
        if hard_max < 1:
            raise ValueError(f"hard_max: {hard_max}; at least 1")
        if seed_cost_s <= 0 or not 0 < alpha <= 1:
            raise ValueError("seed_cost_s must be > 0 and alpha in (0, 1]")
        self.budget_s = budget_s
        self.hard_max = hard_max
        self.min_size = max(1, min(min_size, hard_max))
        # The wait to fill a batch takes at most a quarter of the budget.
        self.wait_s = wait_s if budget_s <= 0 else min(wait_s, budget_s / 4)
        self.alpha = alpha
        self.cost_s = seed_cost_s
        self.backlog = False
        self._grown = 0  # the size reached while backlogged (0: not growing)

    def budget_size(self) -> int:
        """The largest batch whose `wait + 2 × size × cost` fits the budget (within bounds)."""
        if self.budget_s <= 0:
            return self.hard_max
        fits = math.floor((self.budget_s - self.wait_s) / (2 * self.cost_s))
        return max(self.min_size, min(self.hard_max, fits))

    def observe(
        self, events: int, seconds: float, *, full: bool, oldest_age_s: float | None = None
    ) -> None:
        """One processed batch: `events` in `seconds`; whether it was cut full, and how old its
        oldest message was when it was cut (None: unknown)."""
        if events > 0 and seconds >= 0:
            per_event = max(seconds / events, 1e-7)
            self.cost_s += self.alpha * (per_event - self.cost_s)
        late = oldest_age_s is not None and self.budget_s > 0 and oldest_age_s > self.budget_s
        self.backlog = full or late
        if not self.backlog:
            self._grown = 0
        else:
            self._grown = min(self.hard_max, 2 * max(self._grown, self.budget_size()))

    def plan(self) -> BatchPlan:
        """The next batch's cut."""
        if self.budget_s <= 0:
            return BatchPlan(self.hard_max, self.wait_s)
        size = self._grown if self.backlog else self.budget_size()
        return BatchPlan(max(self.min_size, size), self.wait_s)
