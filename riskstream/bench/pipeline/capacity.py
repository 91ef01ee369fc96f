"""Sustained capacity: the highest open-loop rate a host keeps up with for a span.

A drained backlog gives the worker the cores alone; under open load the broker's ingest and the
load generator share them, so levels taken of the drained rate can be overloads whose latency
measures a queue. Here each probe offers a rate for a span (default 60 s) on a fresh worker and
is judged on its consumer lag (messages offered but not yet processed, sampled every 0.25 s):

- **bounded** when the lag at the end (the median of the last tenth of the span's samples) is
  at most `max_lag_s` seconds of the offered rate (default 2 s), and it is not growing over the
  second half: the least-squares slope of the lag there is at most `max_growth` of the offered
  rate (default 2 %: 0.6 s of backlog gained over a 60 s span's second half), or the lag there
  never exceeded `noise_s` of the offered rate (0.25 s: a batch in flight, not a queue);
- and only when the rate was really offered: the load generator (on the same host) sent at
  least `min_offered` of it (default 95 %) over the span. On a loaded host it can fall behind,
  and a probe that offered less says nothing about the rate asked for.

The search starts at the drained rate; while probes are bounded it steps up by `step_up`, and
after the first unbounded one it tries just under the rate that probe did sustain, then bisects
between the highest bounded and the lowest unbounded rate until they are within `precision`
or `max_probes` ran. A probe whose lag was bounded but whose rate the load generator did not
offer ends the search: the capacity is then a lower bound (`Search.load_limited`), never the
generator's ceiling taken for the worker's. The logic is a pure function of the probes' results
(tested with made-up hosts); measuring a probe is the caller's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["LagRule", "Probe", "Search", "judge", "search_capacity"]


@dataclass(frozen=True)
class LagRule:
    """What counts as bounded lag (see the module's docstring)."""

    max_lag_s: float = 2.0
    max_growth: float = 0.02
    noise_s: float = 0.25
    min_offered: float = 0.95


@dataclass(frozen=True)
class Probe:
    """One offered rate held for a span, and the verdict on its lag."""

    offered_per_s: float  # asked for
    sustained_per_s: float
    end_lag: float  # messages
    growth_per_s: float  # messages/s, second half
    bounded: bool
    why: str  # which condition failed, "" when bounded
    latency_p99_ms: float | None = None
    sent_per_s: float | None = None  # what the load generator managed (None: not known)
    # The lag was bounded but the rate was not really offered: says nothing about the worker.
    load_limited: bool = False


def _slope(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    ts = [t for t, _ in points]
    mean_t = statistics.fmean(ts)
    mean_y = statistics.fmean(y for _, y in points)
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var


def judge(
    offered_per_s: float,
    sustained_per_s: float,
    lag: Sequence[tuple[float, float]],
    span_s: float,
    rule: LagRule = LagRule(),
    sent_per_s: float | None = None,
) -> Probe:
    """The verdict on a probe from its lag samples ((s since the offer began, messages));
    samples after `span_s` (the catch-up) are not looked at. `sent_per_s`: the rate the load
    generator achieved."""
    during = sorted((t, y) for t, y in lag if t <= span_s)
    if not during:
        raise ValueError("no lag sample within the span")
    last = [y for t, y in during if t >= span_s * 0.9] or [during[-1][1]]
    end = statistics.median(last)
    half = [(t, y) for t, y in during if t >= span_s / 2] or during[-1:]
    growth = _slope(half)
    why = []
    if end > rule.max_lag_s * offered_per_s:
        why.append(f"end lag {end:,.0f} > {rule.max_lag_s:g} s of offered")
    quiet = max(y for _, y in half) <= rule.noise_s * offered_per_s
    if growth > rule.max_growth * offered_per_s and not quiet:
        why.append(f"lag growing {growth:,.0f}/s > {rule.max_growth:.0%} of offered")
    load_limited = False
    if sent_per_s is not None and sent_per_s < rule.min_offered * offered_per_s:
        load_limited = not why
        why.append(f"only {sent_per_s:,.0f}/s offered (load generator behind)")
    return Probe(offered_per_s, sustained_per_s, end, growth, not why, "; ".join(why),
                 sent_per_s=sent_per_s, load_limited=load_limited)  # fmt: skip


@dataclass
class Search:
    """The probes in the order run, and the highest bounded rate (None: none was).
    `load_limited`: the search stopped at a rate the load generator could not offer, so the
    capacity is at least `capacity_per_s`, not a measured ceiling."""

    start_per_s: float
    probes: list[Probe] = field(default_factory=list)
    capacity_per_s: float | None = None
    load_limited: bool = False


def search_capacity(
    measure: Callable[[float], Probe],
    start_per_s: float,
    *,
    max_probes: int = 5,
    precision: float = 0.1,
    step_up: float = 1.25,
    min_per_s: float = 1.0,
) -> Search:
    """Probe rates with `measure` (see the module's docstring) and return the search."""
    if start_per_s <= 0 or max_probes < 1:
        raise ValueError(f"start {start_per_s} and max_probes {max_probes} must be positive")
    search = Search(start_per_s)
    lo: float | None = None  # the highest bounded rate so far
    hi: Probe | None = None  # the lowest unbounded probe so far
    rate = start_per_s
    for _ in range(max_probes):
        probe = measure(rate)
        search.probes.append(probe)
        if probe.load_limited:  # not an overload of the worker: no higher rate can be judged
            search.load_limited = True
            break
        if probe.bounded:
            lo = max(lo or 0.0, probe.offered_per_s)
        elif hi is None or probe.offered_per_s < hi.offered_per_s:
            hi = probe
        if hi is None:
            rate = rate * step_up
        elif lo is None:
            # Under the lowest overload: what it did sustain, a little less (at least half).
            guess = 0.95 * min(hi.sustained_per_s, hi.offered_per_s)
            rate = max(guess, hi.offered_per_s / 2)
        else:
            if hi.offered_per_s <= lo * (1 + precision):
                break
            rate = (lo + hi.offered_per_s) / 2
        if rate < min_per_s:
            break
    search.capacity_per_s = lo
    return search
