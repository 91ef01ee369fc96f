"""The real windows an export is verified on: the checkpoint's validation users, re-drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score

from events import LABELS
from events.window import Records
from export.exceptions import ExportError
from training.checkpoint import Checkpoint
from training.data import Corpus, load_corpus
from training.examples import batch_windows, build_examples, split_time

__all__ = ["VerificationSet", "pr_auc_per_head", "verification_set"]

_PER_KIND_MAX = 200  # length-1 and full-length windows taken first, at most this many each


@dataclass
class VerificationSet:
    """Parity windows (a sample with length-1 and full ones) and labelled validation windows."""

    windows: list[Records]
    length_one: int
    full: int
    val_windows: list[Records]
    val_y: npt.NDArray[np.float32]  # [N, 2]
    val_weight: npt.NDArray[np.float32]
    source: dict[str, Any]


def _validation_events(
    ckpt: Checkpoint, corpus: Corpus
) -> tuple[npt.NDArray[np.int32], int | None, int | None]:
    """The users and [from, to) times of the checkpoint's validation events in `corpus`: the
    choose users from the validation period on (training.examples.split_time, drawn again
    with the recorded settings), or, for checkpoints from before it, the recorded
    validation users before the recorded cut."""
    saved = ckpt.meta.split
    if saved is not None and saved.val_user_ids is not None and saved.t_cut_ms is not None:
        index = corpus.user_index()
        ids = [index[u] for u in saved.val_user_ids if u in index]
        return np.asarray(sorted(ids), dtype=np.int32), None, saved.t_cut_ms
    cfg = ckpt.meta.train
    split = split_time(
        corpus, seed=cfg.seed, val_after_quantile=cfg.val_after_quantile,
        check_share=cfg.check_share,
    )  # fmt: skip
    return split.choose_users, split.t_val_ms, None


def verification_set(
    ckpt: Checkpoint,
    *,
    data: tuple[Path, Path | None, Path | None],
    windows: int,
    progress: bool = True,
) -> VerificationSet:
    """`windows` parity windows and the labelled windows of the checkpoint's validation users,
    from `data` (events, labels, feedback)."""
    events, labels, feedback = data
    if labels is None and feedback is None:
        raise ExportError("--labels or --feedback: INT8 verification needs labelled windows")
    corpus = load_corpus(
        events,
        labels,
        feedback,
        spec=ckpt.spec,
        session_gap_s=ckpt.session_gap_s,
        progress=progress,
    )
    cfg = ckpt.meta.train
    val_users, t_from_ms, t_to_ms = _validation_events(ckpt, corpus)
    # Parity on windows drawn from every validation event; PR-AUC on all positives and a
    # weighted share of negatives (as early stopping does), to keep the export quick.
    every = build_examples(corpus, val_users, ckpt.policy, t_from_ms=t_from_ms, t_to_ms=t_to_ms)
    val = build_examples(
        corpus,
        val_users,
        ckpt.policy,
        t_from_ms=t_from_ms,
        t_to_ms=t_to_ms,
        neg_keep=cfg.eval_neg_keep,
        seed=cfg.seed,
    )
    if len(every) < windows:
        raise ExportError(
            f"--events {events}: {len(every):,} validation windows, verification needs "
            f"{windows:,}; use a larger data set or lower --windows (≥ 1,000)"
        )
    lengths = every.lengths
    rng = np.random.default_rng(cfg.seed)
    one = np.flatnonzero(lengths == 1)[:_PER_KIND_MAX]
    full = np.flatnonzero(lengths == ckpt.policy.max_events)[:_PER_KIND_MAX]
    if len(one) == 0 or len(full) == 0:
        raise ExportError(
            f"--events {events}: the validation windows have no length-1 or no full-length "
            f"({ckpt.policy.max_events}) window; verification needs both"
        )
    rest = np.setdiff1d(np.arange(len(every)), np.concatenate([one, full]))
    fill = rng.choice(rest, windows - len(one) - len(full), replace=False)
    chosen = np.concatenate([one, full, np.sort(fill)])
    return VerificationSet(
        windows=batch_windows(corpus, every, chosen),
        length_one=len(one),
        full=len(full),
        val_windows=batch_windows(corpus, val, np.arange(len(val))),
        val_y=val.y,
        val_weight=val.weight,
        source={
            "events": str(events),
            "labels": str(labels) if labels else None,
            "feedback": str(feedback) if feedback else None,
            "validation_users": len(val_users),
            "validation_windows": len(val),
        },
    )


def pr_auc_per_head(
    y: npt.NDArray[Any], scores: npt.NDArray[Any], weight: npt.NDArray[Any]
) -> dict[str, float]:
    """Weighted PR-AUC (average precision) per head; heads without a positive are left out
    (nothing to rank: they cannot tell two graphs apart)."""
    return {
        head: float(average_precision_score(y[:, h] > 0.5, scores[:, h], sample_weight=weight))
        for h, head in enumerate(LABELS)
        if (y[:, h] > 0.5).any()
    }
