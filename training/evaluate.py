"""Scoring a data set with a model and the GBDT baseline, and writing the reports."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from events import LABELS, EncodingSpec, WindowPolicy, windows_to_inputs
from events.aggregates import AGGREGATE_NAMES, window_aggregates
from events.window import Records
from training.baseline import fit_baseline
from training.checkpoint import Checkpoint, load_checkpoint
from training.data import Corpus, load_corpus
from training.examples import ExampleSet, batch_windows, build_examples
from training.loops import score
from training.metrics import (
    EvalInput,
    choose_threshold,
    evaluate,
    normal_users_alerted_per_1000_per_day,
    pr_curve,
)
from training.progress import Progress
from training.report import write_report

__all__ = [
    "Scorer",
    "aggregates",
    "checkpoint_scorer",
    "eval_input",
    "evaluate_model",
    "finish_report",
]

log = logging.getLogger(__name__)


def first_purchases(corpus: Corpus) -> dict[int, int | None]:
    """Per episode index: ts of its user's first purchase inside the episode, if any."""
    purchase = corpus.spec.event_types.index("purchase")
    by_user = {u.user_id: u for u in corpus.users}
    out: dict[int, int | None] = {}
    for i, ep in enumerate(corpus.episodes):
        user = by_user.get(ep.user_id)
        if user is None:
            out[i] = None
            continue
        hit = (user.records["type"] == purchase) & (user.ts_ms >= ep.start_ms)
        hit &= user.ts_ms <= ep.end_ms
        out[i] = int(user.ts_ms[hit].min()) if hit.any() else None
    return out


def eval_input(corpus: Corpus, examples: ExampleSet, scores: npt.NDArray[Any]) -> EvalInput:
    """What the metrics need about every scored example."""
    user_ids = np.array([corpus.users[u].user_id for u in examples.user_index], dtype=object)
    return EvalInput(
        scores=scores.astype(np.float64),
        y=examples.y.astype(np.float64),
        weight=examples.weight.astype(np.float64),
        user_ids=user_ids,
        ts_ms=examples.ts_ms,
        episode=examples.episode.astype(np.int64),
        episodes=corpus.episodes,
        first_purchase_ms=first_purchases(corpus),
    )


def aggregates(
    corpus: Corpus,
    examples: ExampleSet,
    progress: bool = True,
    chunk: int = 4096,
    dtype: type[np.floating[Any]] = np.float32,
) -> npt.NDArray[Any]:
    """The baseline's hand-made window aggregates for every example, from the shared inputs.

    Written chunk by chunk into one preallocated matrix: a list of chunks concatenated (and
    cast) held three copies at the peak. `dtype=np.float64` gives what sklearn's GBDT fits on
    (it converts anything else to a float64 copy, per head): the same values, one matrix less.
    """
    starts = range(0, len(examples), chunk)
    out = np.empty((len(examples), len(AGGREGATE_NAMES)), dtype=dtype)
    with Progress(
        "aggregates", len(starts), unit="chunk", enabled=progress, transient=True, summary=False
    ) as bar:
        for start in starts:
            idx = np.arange(start, min(start + chunk, len(examples)))
            inputs = windows_to_inputs(batch_windows(corpus, examples, idx), corpus.spec)
            out[idx[0] : idx[-1] + 1] = window_aggregates(inputs.features, inputs.attention_mask)
            bar.update(samples=len(idx))
    if not len(examples):
        return np.zeros((0, 0), dtype=dtype)
    return out


def finish_report(
    out: Path,
    model_inp: EvalInput,
    baseline_scores: npt.NDArray[Any],
    thresholds: Mapping[str, float],
    baseline_thresholds: Mapping[str, float],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Metrics for model and baseline, report.json, report.md and pr_curves.png in `out`."""
    base_inp = replace(model_inp, scores=baseline_scores)
    report: dict[str, Any] = {
        "heads": evaluate(model_inp, thresholds),
        "baseline": evaluate(base_inp, baseline_thresholds),
        **extra,
    }
    curves: dict[str, dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]] = {
        head: {"model": pr_curve(model_inp, h), "baseline": pr_curve(base_inp, h)}
        for h, head in enumerate(LABELS)
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    write_report(report, out, curves)
    return report


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _cross_fit_baseline(
    corpus: Corpus, examples: ExampleSet, x: npt.NDArray[np.float32], seed: int
) -> npt.NDArray[np.float32]:
    """Baseline scores on a data set without a training split: two folds by user, each
    fold scored by a baseline fitted on the other (the baseline sees this set's labels,
    which can only flatter it). `x`: the examples' aggregates."""
    fold = np.random.default_rng(seed).integers(0, 2, size=len(corpus.users))[examples.user_index]
    scores = np.zeros((len(examples), 2), dtype=np.float32)
    for k in (0, 1):
        fit = fold != k
        model = fit_baseline(x[fit], examples.y[fit], examples.weight[fit], seed=seed)
        scores[~fit] = model.predict(x[~fit])
    return scores


@dataclass
class Scorer:
    """A checkpoint (torch) or a bundle (ONNX Runtime), seen the same way by `evaluate`."""

    spec: EncodingSpec
    policy: WindowPolicy
    thresholds: dict[str, float]
    session_gap_s: int
    described: str
    score_windows: Callable[[list[Records]], npt.NDArray[np.float32]] | None = None
    checkpoint: Checkpoint | None = None

    def score(
        self,
        corpus: Corpus,
        examples: ExampleSet,
        progress: bool,
        x: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[Any]:
        """Served scores [len(examples), heads]; a blended checkpoint reads the aggregates `x`."""
        return self.score_parts(corpus, examples, progress, x)[1]

    def score_parts(
        self,
        corpus: Corpus,
        examples: ExampleSet,
        progress: bool,
        x: npt.NDArray[np.float32] | None = None,
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """(the sequence model's scores, the served scores): equal unless the checkpoint blends
        the model with its trees."""
        ckpt = self.checkpoint
        if ckpt is not None:
            probs = score(ckpt.model, corpus, examples, progress=progress)
            if ckpt.blend is None or ckpt.trees is None:
                return probs, probs
            x = aggregates(corpus, examples, progress) if x is None else x
            raw = np.stack([ckpt.trees[h].predict_raw(x) for h in ckpt.blend.weights], axis=1)
            return probs, ckpt.blend.combine(probs, raw)
        served = self._score_windows(corpus, examples, progress)
        return served, served

    def _score_windows(
        self, corpus: Corpus, examples: ExampleSet, progress: bool
    ) -> npt.NDArray[Any]:
        assert self.score_windows is not None
        out = np.zeros((len(examples), 2), dtype=np.float32)
        chunks = range(0, len(examples), 8192)
        with Progress(
            "score", len(chunks), unit="chunk", enabled=progress, transient=True, summary=False
        ) as bar:
            for start in chunks:
                idx = np.arange(start, min(start + 8192, len(examples)))
                out[idx] = self.score_windows(batch_windows(corpus, examples, idx))
                bar.update(samples=len(idx))
        return out


def _stored_baseline(
    ckpt: Checkpoint | None, x: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float64], dict[str, float]] | None:
    """The GBDT the checkpoint stored (fitted on all the history `train` was given, like the
    model) and the thresholds training chose for it, or None: the honest reference."""
    if ckpt is None or ckpt.trees is None:
        return None
    scores = np.stack([ckpt.trees[h].predict(x) for h in LABELS], axis=1).astype(np.float64)
    saved = ckpt.meta.baseline_thresholds
    return scores, {h: float(saved.get(h, 0.5)) for h in LABELS}


def checkpoint_scorer(path: Path) -> Scorer:
    """A training checkpoint as a `Scorer` (a bundle's comes from the export layer)."""
    ckpt = load_checkpoint(path)
    return Scorer(
        ckpt.spec,
        ckpt.policy,
        ckpt.thresholds,
        ckpt.session_gap_s,
        f"checkpoint (torch, step {ckpt.meta.step})",
        checkpoint=ckpt,
    )


def evaluate_model(
    model_dir: Path,
    events: Path,
    labels: Path | None,
    out_json: Path,
    *,
    feedback: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    scorer: Scorer | None = None,
    candidates: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """`riskstream evaluate`: score every event of a data set with a checkpoint or an exported
    bundle (its served graph, given as `scorer` by the export layer); compare with a
    GBDT on all history the checkpoint stored (a cross-fitted one beside it); write the report
    files beside `out_json`. `candidates` (name → head → threshold): other thresholds for
    the shipped scores, whose alert rates go in the report's `threshold_candidates`."""
    model = scorer or checkpoint_scorer(model_dir)
    corpus = load_corpus(
        events,
        labels,
        feedback,
        spec=model.spec,
        session_gap_s=model.session_gap_s,
        progress=progress,
    )
    users = np.arange(len(corpus.users), dtype=np.int32)
    examples = build_examples(corpus, users, model.policy)
    x = aggregates(corpus, examples, progress)
    model_scores, scores = model.score_parts(corpus, examples, progress, x)
    cross_scores = _cross_fit_baseline(corpus, examples, x, seed).astype(np.float64)
    inp = eval_input(corpus, examples, scores)
    cross_thresholds: dict[str, float] = {
        head: choose_threshold(replace(inp, scores=cross_scores), h)
        for h, head in enumerate(LABELS)
    }
    cross_fitted = evaluate(replace(inp, scores=cross_scores), cross_thresholds)
    stored = _stored_baseline(model.checkpoint, x)
    # The headline compares with the checkpoint's own GBDT on all history; the GBDT fitted on
    # this very set (cross-fitted: it sees this set's labels, which can only flatter it) is an
    # extra column, and the headline only where no GBDT was stored (a bundle).
    base_scores, base_thresholds = stored or (cross_scores, cross_thresholds)
    extra: dict[str, Any] = {
        "baseline_name": "GBDT on all history" if stored else "GBDT cross-fitted on this set",
        "data": {
            "events": corpus.n_events,
            "users": len(corpus.users),
            "examples": len(examples),
            "episodes": len(corpus.episodes),
            "refused": corpus.refused,
            "duplicates": corpus.duplicates,
        },
        "evaluation": {
            "model": str(model_dir),
            "events": str(events),
            "baseline": "the checkpoint's own GBDT on the 88 window aggregates, fitted on all "
            "the history `train` was given, at the thresholds training chose for it"
            if stored
            else "HistGradientBoosting, cross-fitted 2-fold by user on this set (no GBDT "
            "stored with the model)",
            "baseline_cross_fitted": "HistGradientBoosting cross-fitted 2-fold by user on this "
            "set, thresholds chosen on it: it sees this set's labels",
            "scored_by": model.described,
        },
    }
    if stored:
        extra["baseline_cross_fitted"] = cross_fitted
    if candidates:
        extra["threshold_candidates"] = {
            name: {
                head: normal_users_alerted_per_1000_per_day(inp, h, float(chosen[head]))
                for h, head in enumerate(LABELS)
            }
            for name, chosen in candidates.items()
        }
    ckpt = model.checkpoint
    if ckpt is not None and ckpt.blend is not None:  # the ablation: the sequence model alone
        ens = ckpt.meta.ensemble
        alone = ens.model_thresholds if ens and ens.model_thresholds else model.thresholds
        extra = {**extra, "model_alone": evaluate(replace(inp, scores=model_scores), alone)}
    report = finish_report(
        out_json.parent, inp, base_scores, model.thresholds, base_thresholds, extra
    )
    if out_json.name != "report.json":
        out_json.write_text((out_json.parent / "report.json").read_text())
    return report
