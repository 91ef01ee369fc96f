"""`riskstream train`: load → split → pretrain → fine-tune → thresholds → test report."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from events import WindowPolicy
from training.baseline import fit_baseline
from training.checkpoint import save_checkpoint
from training.config import TrainConfig
from training.data import load_corpus
from training.ensemble import choose_blend, fit_blend
from training.evaluate import aggregates, eval_input, finish_report
from training.examples import HEADS, build_examples, cut_time, split_users
from training.loops import finetune, pretrain, score
from training.metrics import EvalInput, choose_threshold, evaluate
from training.model import PRESETS, EventBert, ModelConfig, config_from_init, copy_init_weights

__all__ = ["train"]

log = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # libraries below may draw from the global state


def _mean_pr_auc(y: np.ndarray, scores: np.ndarray, weight: np.ndarray) -> float:
    values = [
        float(average_precision_score(y[:, h], scores[:, h], sample_weight=weight))
        for h in range(len(HEADS))
        if y[:, h].any()
    ]
    return float(np.mean(values)) if values else 0.0


def _thresholds(inp: EvalInput, cfg: TrainConfig) -> dict[str, float]:
    return {
        head: choose_threshold(
            inp,
            h,
            max_alerted_per_1000_per_day=cfg.max_alerted_per_1000_per_day,
            target_precision=cfg.target_precision,
            target_fpr=cfg.target_fpr,
        )
        for h, head in enumerate(HEADS)
    }


def train(
    events: Path,
    labels: Path | None,
    out: Path,
    cfg: TrainConfig,
    *,
    feedback: Path | None = None,
    init: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a model on a data set and write the checkpoint and its test report to `out`."""
    began = time.perf_counter()
    _seed_everything(cfg.seed)
    corpus = load_corpus(
        events, labels, feedback, session_gap_s=cfg.session_gap_s, progress=progress
    )
    policy = WindowPolicy(max_events=cfg.max_events, max_age_s=cfg.max_age_s)
    # Analysts' decisions known only after the cut would leak the future: left out up front.
    corpus = corpus.known_before(cut_time(corpus, cfg.test_after_quantile))
    split = split_users(
        corpus,
        seed=cfg.seed,
        fractions=cfg.split_fractions,
        test_after_quantile=cfg.test_after_quantile,
    )
    t_cut = split.t_cut_ms
    labelled = split.train_users  # pretraining still reads every training user
    if cfg.labelled_share < 1.0:
        keep = max(1, round(len(labelled) * cfg.labelled_share))
        pick = np.random.default_rng(cfg.seed + 1).choice(len(labelled), keep, replace=False)
        labelled = labelled[np.sort(pick)]
    train_ex = build_examples(
        corpus,
        labelled,
        policy,
        t_to_ms=t_cut,
        neg_keep=cfg.neg_keep,
        seed=cfg.seed,
        known_negative_weight=cfg.known_negative_weight,
    )
    val_ex = build_examples(corpus, split.val_users, policy, t_to_ms=t_cut)
    test_ex = build_examples(corpus, split.test_users, policy, t_from_ms=t_cut)
    # Early stopping and the untrained reference need ranking quality only: score all
    # positives and a weighted share of negatives. Thresholds and the report use every event.
    stop_ex = build_examples(
        corpus, split.val_users, policy, t_to_ms=t_cut, neg_keep=cfg.eval_neg_keep, seed=cfg.seed
    )
    untrained_ex = build_examples(
        corpus,
        split.test_users,
        policy,
        t_from_ms=t_cut,
        neg_keep=cfg.eval_neg_keep,
        seed=cfg.seed,
    )
    unlabeled = build_examples(corpus, split.train_users, policy, t_to_ms=t_cut)
    rng = np.random.default_rng(cfg.seed)
    take = min(cfg.pretrain_windows, len(unlabeled))
    pretrain_ex = unlabeled.subset(np.sort(rng.choice(len(unlabeled), take, replace=False)))
    log.info(
        "examples: train %d (negatives kept %.0f%%), validation %d, test %d, pretrain %d",
        len(train_ex),
        cfg.neg_keep * 100,
        len(val_ex),
        len(test_ex),
        len(pretrain_ex),
    )

    model_cfg = ModelConfig.for_spec(corpus.spec, **PRESETS[cfg.preset], max_len=cfg.max_events)
    init_info: dict[str, Any] = {}
    if init is not None:
        model_cfg = config_from_init(init, model_cfg)
    model = EventBert(model_cfg)
    if init is not None:
        init_info = {"path": str(init), **copy_init_weights(model, init)}

    untrained_scores = score(model, corpus, untrained_ex, progress=progress, desc="untrained")
    pre_stats = pretrain(model, corpus, pretrain_ex, cfg, progress)

    def validate(m: EventBert) -> float:
        scores = score(m, corpus, stop_ex, progress=progress, desc="validate")
        return _mean_pr_auc(stop_ex.y, scores, stop_ex.weight)

    fine_stats = finetune(model, corpus, train_ex, cfg, validate, progress)

    val_inp = eval_input(corpus, val_ex, score(model, corpus, val_ex, progress=progress))
    thresholds = _thresholds(val_inp, cfg)
    test_inp = eval_input(corpus, test_ex, score(model, corpus, test_ex, progress=progress))

    # The baseline: same split, same windows, its own thresholds chosen the same way.
    base_began = time.perf_counter()
    x_val = aggregates(corpus, val_ex, progress)
    x_test = aggregates(corpus, test_ex, progress)
    baseline = fit_baseline(
        aggregates(corpus, train_ex, progress),
        train_ex.y,
        train_ex.weight,
        seed=cfg.seed,
        X_val=x_val,
        y_val=val_ex.y,
    )
    base_val = replace(val_inp, scores=baseline.predict(x_val))
    base_thresholds = _thresholds(base_val, cfg)
    base_test = baseline.predict(x_test)
    base_wall = time.perf_counter() - base_began

    # The stacked ensemble: model and GBDT blended on validation; shipped if it wins there.
    blend = fit_blend(HEADS, val_inp.scores, baseline.raw(x_val), val_ex.y, val_ex.weight)
    blend_val = blend.combine(val_inp.scores, baseline.raw(x_val))
    ship_blend, blend_figures = choose_blend(
        cfg.ensemble, blend_val, val_inp.scores, val_ex.y, val_ex.weight
    )
    model_thresholds = thresholds
    model_alone = evaluate(test_inp, thresholds)
    if ship_blend:
        thresholds = _thresholds(replace(val_inp, scores=blend_val), cfg)
        test_inp = replace(test_inp, scores=blend.combine(test_inp.scores, baseline.raw(x_test)))
    log.info(
        "ensemble: validation PR-AUC model %.4f, blend %.4f → %s",
        blend_figures["model_validation_pr_auc"],
        blend_figures["blend_validation_pr_auc"],
        "the blend ships" if ship_blend else "the model alone ships",
    )

    untrained = _mean_pr_auc(untrained_ex.y, untrained_scores, untrained_ex.weight)
    extra = {
        "split": {
            **split.to_dict(),
            "train_examples": len(train_ex),
            "labelled_train_users": len(labelled),
            "validation_examples": len(val_ex),
            "test_examples": len(test_ex),
            "pretrain_windows": len(pretrain_ex),
            "early_stopping_examples": len(stop_ex),
        },
        "data": {
            "events": corpus.n_events,
            "users": len(corpus.users),
            "episodes": len(corpus.episodes),
            "known_negatives": len(corpus.negatives),
            "refused": corpus.refused,
            "duplicates": corpus.duplicates,
        },
        "training": {
            "preset": cfg.preset,
            "seed": cfg.seed,
            "model": model_cfg.to_dict()
            | {"parameters": sum(p.numel() for p in model.parameters())},
            "pretrain": pre_stats.to_dict(),
            "finetune": fine_stats.to_dict(),
            "baseline_wall_s": round(base_wall, 2),
            "untrained_test_pr_auc_mean": round(untrained, 5),
            "init": init_info,
            "wall_s": round(time.perf_counter() - began, 1),
            "torch_threads": torch.get_num_threads(),
        },
        "ensemble": {
            "shipped": ship_blend,
            "mode": cfg.ensemble,
            "blend": blend.to_dict(),
            **blend_figures,
            "note": "heads = the shipped scorer; model_alone = the sequence model without the "
            "GBDT, at its own validation thresholds; baseline = the GBDT alone. Blend weights, "
            "thresholds and the choice come from the validation users.",
            "model_alone": model_alone,
        },
    }
    report = finish_report(out, test_inp, base_test, thresholds, base_thresholds, extra)
    meta = {
        "train": cfg.to_dict(),
        "step": pre_stats.steps + fine_stats.steps,
        "session_gap_s": cfg.session_gap_s,
        "baseline_thresholds": base_thresholds,
        "source": {
            "events": str(events),
            "labels": str(labels) if labels else None,
            "feedback": str(feedback) if feedback else None,
        },
    }
    save_checkpoint(
        out,
        model,
        corpus.spec,
        policy,
        thresholds,
        meta,
        trees=dict(zip(HEADS, baseline.trees(), strict=True)),
        blend=blend if ship_blend else None,
        model_thresholds=model_thresholds,
    )
    log.info("checkpoint and report written to %s", out)
    return report
