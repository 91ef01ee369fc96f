"""Examples for fine-tuning: one per scored event, its window bounds and its labels per head;
the out-of-time split; batches of windows grouped by length.

A window is `corpus.users[u].records[start:end]`, bounds from `events.window.window_slices` (the
offline twin of the stream's store), so the trainer scores exactly what the worker would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from events import LABELS, WindowPolicy, format_ts_ms, window_slices
from training.data import Corpus, UserHistory
from training.exceptions import DataError

__all__ = [
    "ExampleSet",
    "Split",
    "batch_windows",
    "build_examples",
    "cut_time",
    "length_buckets",
    "sample_examples",
    "split_time",
]

logger = logging.getLogger(__name__)

_PHI: Final = (5**0.5 - 1) / 2  # golden-ratio step: the most evenly spread frac(u + i·φ)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass
class ExampleSet:
    """Parallel arrays, one row per example (the scored event is `records[end - 1]`)."""

    user_index: I32  # into corpus.users
    start: I32
    end: I32
    y: F32  # [N, 2], columns in LABELS order
    episode: I32  # [N, 2], index into corpus.episodes covering the event per head, else -1
    weight: F32  # 1 / keep-probability for subsampled negatives, else 1
    ts_ms: I64  # ts of the scored event

    def __len__(self) -> int:
        return len(self.user_index)

    def subset(self, idx: npt.NDArray[np.integer]) -> ExampleSet:
        """The examples at `idx` (a new set; arrays are copies)."""
        return ExampleSet(
            self.user_index[idx],
            self.start[idx],
            self.end[idx],
            self.y[idx],
            self.episode[idx],
            self.weight[idx],
            self.ts_ms[idx],
        )

    @property
    def lengths(self) -> I32:
        """Window length (events) per example."""
        lengths: I32 = self.end - self.start
        return lengths

    def positives(self) -> npt.NDArray[np.int64]:
        """Positive examples per head, in LABELS order."""
        counts: npt.NDArray[np.int64] = (self.y > 0.5).sum(axis=0).astype(np.int64)
        return counts


@dataclass(frozen=True, eq=False)
class Split:
    """Out of time: selection fits on events before `t_val_ms`; the validation period (events at
    or after it, every user's) is halved by user into the users the choices are made on
    (`choose_users`: early stopping, blend, thresholds, calibration) and those the report is
    judged on (`check_users`), so the report's alert rates are not the ones the thresholds
    were chosen to hit. The shipped model then learns from every event."""

    t_val_ms: int
    choose_users: I32
    check_users: I32

    def __eq__(self, other: object) -> bool:
        # By value: the generated __eq__ would compare arrays elementwise and raise.
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.t_val_ms == other.t_val_ms
            and np.array_equal(self.choose_users, other.choose_users)
            and np.array_equal(self.check_users, other.check_users)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable

    def to_dict(self) -> dict[str, object]:
        """Sizes and the cut, for the report."""
        return {
            "validation_from_ms": self.t_val_ms,
            "validation_from": format_ts_ms(self.t_val_ms),
            "choose_users": len(self.choose_users),
            "check_users": len(self.check_users),
        }


def _episodes_by_user(corpus: Corpus) -> dict[str, list[int]]:
    by_user: dict[str, list[int]] = {}
    for i, ep in enumerate(corpus.episodes):
        by_user.setdefault(ep.user_id, []).append(i)
    return by_user


def cut_time(corpus: Corpus, quantile: float) -> int:
    """The `quantile` quantile of every event's time."""
    if not corpus.users:
        raise DataError("corpus: has no users to split")
    all_ts = np.concatenate([u.ts_ms for u in corpus.users])
    return int(np.quantile(all_ts, quantile, method="lower"))


def split_time(
    corpus: Corpus, *, seed: int, val_after_quantile: float = 0.8, check_share: float = 0.5
) -> Split:
    """The validation period starts at the `val_after_quantile` quantile of event times; its
    users (those with an event in it) go to `check_users` with share `check_share`, the rest
    to `choose_users`, by a seeded draw stratified on which heads a user has episodes for
    before and after the cut.

    Users are ordered by stratum (fraud bits most significant: fraud is the rarer head), at
    random within one, and user i goes to check where frac(u + i·φ) < check_share: a
    low-discrepancy sequence, so every run of similar users is split within a user or two of
    the share.
    """
    if not 0.0 < val_after_quantile < 1.0:
        raise DataError(f"val_after_quantile: must be in (0, 1), got {val_after_quantile}")
    if not 0.0 < check_share < 1.0:
        raise DataError(f"check_share: must be in (0, 1), got {check_share}")
    t_val = cut_time(corpus, val_after_quantile)
    index = corpus.user_index()
    strata = np.zeros(len(corpus.users), dtype=np.int64)
    for ep in corpus.episodes:
        ui = index.get(ep.user_id)
        if ui is None or ep.label not in LABELS:
            continue
        # bits, most significant first: fraud before, fraud after, abnormal before, after
        bit = 3 - 2 * LABELS.index(ep.label)
        if ep.start_ms < t_val:
            strata[ui] |= 1 << bit
        if ep.end_ms >= t_val:
            strata[ui] |= 1 << (bit - 1)
    active = np.asarray(
        [len(u) > 0 and int(u.ts_ms[-1]) >= t_val for u in corpus.users], dtype=bool
    )
    # Users are indexed in user_id order, so the draw does not depend on file order.
    rng = np.random.default_rng(seed)
    live = np.flatnonzero(active)
    order = live[np.lexsort((rng.random(len(live)), strata[live]))]
    q = (rng.random() + np.arange(len(order)) * _PHI) % 1.0
    check = order[q < check_share]
    split = Split(
        t_val,
        np.setdiff1d(order, check).astype(np.int32),
        np.sort(check).astype(np.int32),
    )
    logger.info("split: %s", split.to_dict())
    return split


def _cover(ts: I64, episodes: list[tuple[int, int, int]]) -> tuple[npt.NDArray[np.bool_], I32]:
    """Which of `ts` lie in any of `episodes` (start, end, index), and the covering index."""
    if not episodes:
        return np.zeros(len(ts), dtype=bool), np.full(len(ts), -1, dtype=np.int32)
    eps = np.array(sorted(episodes), dtype=np.int64)
    starts, ends, ids = eps[:, 0], eps[:, 1], eps[:, 2]
    # Running max of ends: the episode reaching furthest among those started by ts. Its
    # holder is the last position where the end equals the running max.
    reach = np.maximum.accumulate(ends)
    holder = np.maximum.accumulate(np.where(ends == reach, np.arange(len(ends)), 0))
    k = np.searchsorted(starts, ts, side="right") - 1
    kc = np.maximum(k, 0)
    hit = (k >= 0) & (reach[kc] >= ts)
    which = np.where(hit, ids[holder[kc]], -1).astype(np.int32)
    return hit, which


def _user_examples(
    user: UserHistory, eps: list[int], corpus: Corpus, policy: WindowPolicy, lo: int, hi: int
) -> tuple[I32, I32, npt.NDArray[np.bool_], I32]:
    """Window bounds, labels and episode ids of the user's events lo..hi-1."""
    bounds = np.fromiter(
        (x for s in window_slices(user.ts_ms, policy) for x in (s.start, s.stop)),
        dtype=np.int32,
        count=2 * len(user.ts_ms),
    ).reshape(-1, 2)[lo:hi]
    ts = user.ts_ms[lo:hi]
    hits = np.zeros((len(ts), len(LABELS)), dtype=bool)
    which = np.full((len(ts), len(LABELS)), -1, dtype=np.int32)
    for h, head in enumerate(LABELS):
        mine = [
            (corpus.episodes[i].start_ms, corpus.episodes[i].end_ms, i)
            for i in eps
            if corpus.episodes[i].label == head
        ]
        hits[:, h], which[:, h] = _cover(ts, mine)
    return bounds[:, 0].copy(), bounds[:, 1].copy(), hits, which


#: Users per block while building examples: the per-user parts and the pre-subsampling
#: candidates are held for one block at a time, not for the whole corpus.
_BLOCK_USERS: Final = 2048


def build_examples(
    corpus: Corpus,
    users: npt.NDArray[np.integer],
    policy: WindowPolicy,
    *,
    t_from_ms: int | None = None,
    t_to_ms: int | None = None,
    neg_keep: float = 1.0,
    seed: int = 0,
    known_negative_weight: float | None = None,
    rows: npt.NDArray[np.integer] | None = None,
) -> ExampleSet:
    """One example per event of `users` with ts in [t_from_ms, t_to_ms).

    Earlier events still serve as window context. Examples negative for both heads are kept
    with probability `neg_keep` (seeded) and weighted 1/neg_keep; positives are always kept.
    With `known_negative_weight`, a negative example inside a known negative (an analyst's
    false positive, `corpus.negatives`) is always kept too, with that weight: the model's own
    mistakes, confirmed by a person, are never subsampled away. With `rows` (sorted, without
    `neg_keep`), only the examples at those positions of the full set are built.

    Built a block of users at a time, each block subsampled before the next (the draws are
    one seeded stream, so the result is the one a single pass gives): what is held beyond
    the result is one block's candidates.
    """
    if not 0.0 < neg_keep <= 1.0:
        raise DataError(f"neg_keep: must be in (0, 1], got {neg_keep}")
    if rows is not None and neg_keep < 1.0:
        raise DataError("rows: only without negative subsampling (neg_keep 1)")
    by_user = _episodes_by_user(corpus)
    negatives: dict[str, list[tuple[int, int, int]]] = {}
    if known_negative_weight is not None:
        for i, ep in enumerate(corpus.negatives):
            negatives.setdefault(ep.user_id, []).append((ep.start_ms, ep.end_ms, i))
    rng = np.random.default_rng(seed)
    wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
    offset = 0  # candidates (examples before subsampling) so far
    blocks: list[ExampleSet] = []
    order = np.asarray(users, dtype=np.int64).tolist()
    for b in range(0, len(order), _BLOCK_USERS):
        parts: list[tuple[int, I32, I32, npt.NDArray[np.bool_], I32, I64]] = []
        known_neg: list[npt.NDArray[np.bool_]] = []
        picks: list[npt.NDArray[np.int64]] = []
        held = 0  # candidates in this block's parts
        for ui in order[b : b + _BLOCK_USERS]:
            user = corpus.users[ui]
            lo = 0 if t_from_ms is None else int(np.searchsorted(user.ts_ms, t_from_ms, "left"))
            hi = len(user) if t_to_ms is None else int(np.searchsorted(user.ts_ms, t_to_ms))
            if hi <= lo:
                continue
            first, offset = offset, offset + hi - lo
            if wanted is not None:
                a, z = np.searchsorted(wanted, [first, offset])
                if a == z:  # none of this user's examples is asked for
                    continue
                picks.append(wanted[a:z] - first + held)
            start, end, hits, which = _user_examples(
                user, by_user.get(user.user_id, []), corpus, policy, lo, hi
            )
            parts.append((ui, start, end, hits, which, user.ts_ms[lo:hi]))
            held += hi - lo
            known_neg.append(_cover(user.ts_ms[lo:hi], negatives.get(user.user_id, []))[0])
        if not parts:
            continue
        block = _block(parts, known_neg, rng, neg_keep, known_negative_weight)
        blocks.append(block if wanted is None else block.subset(np.concatenate(picks)))
        del parts, known_neg
    if not blocks:
        return _empty()
    return ExampleSet(
        np.concatenate([x.user_index for x in blocks]),
        np.concatenate([x.start for x in blocks]),
        np.concatenate([x.end for x in blocks]),
        np.concatenate([x.y for x in blocks]),
        np.concatenate([x.episode for x in blocks]),
        np.concatenate([x.weight for x in blocks]),
        np.concatenate([x.ts_ms for x in blocks]),
    )


def _block(
    parts: list[tuple[int, I32, I32, npt.NDArray[np.bool_], I32, I64]],
    known_neg: list[npt.NDArray[np.bool_]],
    rng: np.random.Generator,
    neg_keep: float,
    known_negative_weight: float | None,
) -> ExampleSet:
    """One block's examples, negatives subsampled with the next draws of `rng`."""
    user_index = np.concatenate([np.full(len(p[1]), p[0], dtype=np.int32) for p in parts])
    start = np.concatenate([p[1] for p in parts])
    end = np.concatenate([p[2] for p in parts])
    hits = np.concatenate([p[3] for p in parts])
    which = np.concatenate([p[4] for p in parts])
    ts_ms = np.concatenate([p[5] for p in parts]).astype(np.int64)
    judged = np.concatenate(known_neg) & ~hits.any(axis=1)  # positives win over a dismissal

    weight = np.ones(len(start), dtype=np.float32)
    if known_negative_weight is not None:
        weight[judged] = np.float32(known_negative_weight)
    if neg_keep < 1.0:
        negative = ~hits.any(axis=1)
        draw = rng.random(len(start))
        keep = ~negative | judged | (draw < neg_keep)
        weight[negative & ~judged] = np.float32(1.0 / neg_keep)
        idx = np.flatnonzero(keep)
        user_index, start, end = user_index[idx], start[idx], end[idx]
        hits, which, ts_ms, weight = hits[idx], which[idx], ts_ms[idx], weight[idx]
    return ExampleSet(user_index, start, end, hits.astype(np.float32), which, weight, ts_ms)


def sample_examples(
    corpus: Corpus,
    users: npt.NDArray[np.integer],
    policy: WindowPolicy,
    budget: int,
    seed: int,
) -> ExampleSet:
    """`budget` examples of `users`' every event drawn without replacement (seeded), in order:
    the draw `build_examples` then a seeded choice would make, without building the rest."""
    pool = sum(len(corpus.users[u]) for u in np.asarray(users, dtype=np.int64).tolist())
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(pool, min(budget, pool), replace=False))
    return build_examples(corpus, users, policy, rows=rows)


def _empty() -> ExampleSet:
    i32 = np.zeros(0, dtype=np.int32)
    return ExampleSet(
        i32,
        i32.copy(),
        i32.copy(),
        np.zeros((0, len(LABELS)), dtype=np.float32),
        np.zeros((0, len(LABELS)), dtype=np.int32),
        np.zeros(0, dtype=np.float32),
        np.zeros(0, dtype=np.int64),
    )


def batch_windows(
    corpus: Corpus, examples: ExampleSet, idx: npt.NDArray[np.integer]
) -> list[npt.NDArray[np.void]]:
    """The windows (record slices, views into the users' records) of examples `idx`, for
    `events.features.windows_to_inputs`."""
    users = corpus.users
    return [
        users[u].records[s:e]
        for u, s, e in zip(
            examples.user_index[idx].tolist(),
            examples.start[idx].tolist(),
            examples.end[idx].tolist(),
            strict=True,
        )
    ]


def length_buckets(
    examples: ExampleSet, batch_size: int, *, shuffle: bool, seed: int
) -> list[npt.NDArray[np.int64]]:
    """Batches of example indices of similar window length (less padding), every index once.

    With `shuffle`, equal lengths are tie-broken at random and the batch order is shuffled
    (both seeded); without, batches run from shortest to longest windows.
    """
    if batch_size <= 0:
        raise DataError(f"batch_size: must be > 0, got {batch_size}")
    lengths = examples.lengths
    if shuffle:
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(lengths)), lengths))
    else:
        order = np.argsort(lengths, kind="stable")
    order = order.astype(np.int64)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches)).tolist()]
    return batches
