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

from events import EncodingSpec, WindowPolicy, windows_to_inputs
from events.window import Records
from training.baseline import fit_baseline, window_aggregates
from training.checkpoint import Checkpoint, load_checkpoint, load_stored_baseline
from training.data import Corpus, load_corpus
from training.examples import HEADS, ExampleSet, batch_windows, build_examples
from training.loops import score
from training.metrics import EvalInput, choose_threshold, evaluate, pr_curve
from training.progress import Progress
from training.report import write_report

__all__ = ["aggregates", "eval_input", "evaluate_model", "finish_report"]

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
    corpus: Corpus, examples: ExampleSet, progress: bool = True, chunk: int = 4096
) -> npt.NDArray[np.float32]:
    """The baseline's hand-made window aggregates for every example, from the shared inputs."""
    parts = []
    starts = range(0, len(examples), chunk)
    with Progress(
        "aggregates", len(starts), unit="chunk", enabled=progress, transient=True, summary=False
    ) as bar:
        for start in starts:
            idx = np.arange(start, min(start + chunk, len(examples)))
            inputs = windows_to_inputs(batch_windows(corpus, examples, idx), corpus.spec)
            parts.append(window_aggregates(inputs.features, inputs.attention_mask))
            bar.update(samples=len(idx))
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


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
    curves = {
        head: {"model": pr_curve(model_inp, h), "baseline": pr_curve(base_inp, h)}
        for h, head in enumerate(HEADS)
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
    corpus: Corpus,
    examples: ExampleSet,
    seed: int,
    progress: bool,
    x: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Baseline scores on a data set without a training split: two folds by user, each
    fold scored by a baseline fitted on the other (the baseline sees this set's labels,
    which can only flatter it)."""
    x = aggregates(corpus, examples, progress) if x is None else x
    fold = np.random.default_rng(seed).integers(0, 2, size=len(corpus.users))[examples.user_index]
    scores = np.zeros((len(examples), 2), dtype=np.float32)
    for k in (0, 1):
        fit = fold != k
        model = fit_baseline(x[fit], examples.y[fit], examples.weight[fit], seed=seed)
        scores[~fit] = model.predict(x[~fit])
    return scores


@dataclass
class _Scorer:
    """A checkpoint (torch) or a bundle (ONNX Runtime), seen the same way by `evaluate`."""

    spec: EncodingSpec
    policy: WindowPolicy
    thresholds: dict[str, float]
    session_gap_s: int
    described: str
    score_windows: Callable[[list[Records]], npt.NDArray[np.float32]] | None = None
    checkpoint: Checkpoint | None = None

    def score(self, corpus: Corpus, examples: ExampleSet, progress: bool) -> npt.NDArray[Any]:
        if self.checkpoint is not None:
            return score(self.checkpoint.model, corpus, examples, progress=progress)
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


def _load_model(path: Path) -> _Scorer:
    if (path / "manifest.json").is_file():
        from export import load_bundle

        bundle = load_bundle(path)
        return _Scorer(
            bundle.spec,
            bundle.policy,
            bundle.thresholds,
            bundle.manifest.session_gap_s,
            f"bundle {bundle.model_version} ({bundle.variant} on {bundle.provider})",
            score_windows=bundle.score_windows,
        )
    ckpt = load_checkpoint(path)
    return _Scorer(
        ckpt.spec,
        ckpt.policy,
        ckpt.thresholds,
        ckpt.session_gap_s,
        f"checkpoint (torch, step {ckpt.meta.get('step')})",
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
) -> dict[str, Any]:
    """`riskstream evaluate`: score every event of a data set with a checkpoint or an exported
    bundle (its served graph); compare with a cross-fitted baseline; write the report files
    beside `out_json`."""
    model = _load_model(model_dir)
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
    scores = model.score(corpus, examples, progress)
    x = aggregates(corpus, examples, progress)
    base_scores = _cross_fit_baseline(corpus, examples, seed, progress, x)
    inp = eval_input(corpus, examples, scores)
    base_thresholds = {
        head: choose_threshold(replace(inp, scores=base_scores.astype(np.float64)), h)
        for h, head in enumerate(HEADS)
    }
    # The GBDT the checkpoint stored beside its model: fitted on the model's own training
    # data, its thresholds from the model's validation users — the fair comparison.
    stored = load_stored_baseline(model_dir) if model.checkpoint is not None else None
    stored_section: dict[str, Any] = {}
    if stored is not None:
        stored_scores = stored.predict(x)
        saved = model.checkpoint.meta.get("baseline_thresholds", {}) if model.checkpoint else {}
        stored_thresholds = {
            head: float(saved[head])
            if head in saved
            else choose_threshold(replace(inp, scores=stored_scores), h)
            for h, head in enumerate(HEADS)
        }
        stored_section = {
            "stored_baseline": evaluate(replace(inp, scores=stored_scores), stored_thresholds)
        }
    extra = {
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
            "baseline": "HistGradientBoosting, cross-fitted 2-fold by user on this set",
            "stored_baseline": "the checkpoint's own GBDT (fitted with the model, its "
            "thresholds from the model's validation users)"
            if stored is not None
            else "none in this checkpoint",
            "baseline_thresholds": "chosen on this set (the model's come from training)",
            "scored_by": model.described,
        },
    }
    report = finish_report(
        out_json.parent, inp, base_scores, model.thresholds, base_thresholds, extra | stored_section
    )
    if out_json.name != "report.json":
        out_json.write_text((out_json.parent / "report.json").read_text())
    return report
