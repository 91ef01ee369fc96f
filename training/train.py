"""`riskstream train`: load → split → pretrain → fine-tune → thresholds → (refit) → test report;
and `riskstream pretrain`: masked-event pretraining alone, on any unlabeled corpus."""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from events import LABELS, WindowPolicy, format_ts_ms
from training.baseline import fit_baseline
from training.calibration import calibrate
from training.checkpoint import (
    Pretrained,
    is_pretrained,
    load_pretrained,
    save_checkpoint,
    save_pretrained,
)
from training.config import TrainConfig
from training.data import Corpus, load_corpus
from training.ensemble import choose_blend, fit_blend
from training.evaluate import aggregates, eval_input, finish_report
from training.examples import ExampleSet, Split, build_examples, cut_time, split_users
from training.exceptions import TrainingError
from training.loops import Runtime, finetune, pretrain, resolve_device, score
from training.metrics import EvalInput, choose_threshold, evaluate
from training.model import PRESETS, EventBert, ModelConfig, config_from_init, copy_init_weights
from training.resume import ResumeStore

__all__ = ["pretrain_corpus", "train"]

log = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # libraries below may draw from the global state


def _mean_pr_auc(y: np.ndarray, scores: np.ndarray, weight: np.ndarray) -> float:
    values = [
        float(average_precision_score(y[:, h], scores[:, h], sample_weight=weight))
        for h in range(len(LABELS))
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
        for h, head in enumerate(LABELS)
    }


def _check_positives(train_ex: ExampleSet, val_ex: ExampleSet, force: bool) -> None:
    """Refuse (or, with `force`, warn) before training when a head has no positive example
    in the training or validation split: it could neither learn nor get a threshold."""
    tr, va = train_ex.positives(), val_ex.positives()
    empty = [
        f"{head} has {int(tr[h]):,} positive events in the training split and "
        f"{int(va[h]):,} in validation"
        for h, head in enumerate(LABELS)
        if tr[h] == 0 or va[h] == 0
    ]
    if not empty:
        return
    what = "; ".join(empty)
    if not force:
        raise TrainingError(
            f"{what}: too few labelled episodes to train and judge it (a larger world: more "
            "--users or --attack-share; or --force to train anyway)"
        )
    log.warning(
        "%s: training anyway (--force); that head's threshold, severity and scores may mean little",
        what,
    )


def _sample(pool: ExampleSet, budget: int, seed: int) -> ExampleSet:
    """`budget` windows drawn from `pool` without replacement (seeded), in pool order."""
    rng = np.random.default_rng(seed)
    take = min(budget, len(pool))
    return pool.subset(np.sort(rng.choice(len(pool), take, replace=False)))


def _fingerprint(corpus: Corpus) -> dict[str, Any]:
    """What a resumed run must find again: the same data, encoded the same way."""
    return {
        "events": corpus.n_events,
        "users": len(corpus.users),
        "episodes": len(corpus.episodes),
        "spec_sha256": hashlib.sha256(corpus.spec.to_json().encode()).hexdigest()[:16],
    }


def _model_for(
    corpus: Corpus, cfg: TrainConfig, init: Path | None, pre: Pretrained | None
) -> tuple[EventBert, dict[str, Any]]:
    """The model to train: the preset's sizes, or those of the --init checkpoint."""
    if pre is not None:
        model = EventBert(pre.model_config)
        return model, {"path": str(pre.path), "kind": "riskstream-pretrained"} | (
            model.load_encoder(pre.state)
        )
    model_cfg = ModelConfig.for_spec(corpus.spec, **PRESETS[cfg.preset], max_len=cfg.max_events)
    if init is None:
        return EventBert(model_cfg), {}
    model = EventBert(config_from_init(init, model_cfg))
    return model, {"path": str(init), "kind": "huggingface-bert", **copy_init_weights(model, init)}


def _check_pretrained(pre: Pretrained, cfg: TrainConfig) -> None:
    """A pretrained encoder fits this run's windows and sessions (its spec is adopted)."""
    if cfg.max_events > pre.model_config.max_len:
        raise TrainingError(
            f"--init {pre.path}: pretrained on windows of up to {pre.model_config.max_len} "
            f"events, this run uses {cfg.max_events} (--set max_events={pre.model_config.max_len})"
        )
    if pre.session_gap_s != cfg.session_gap_s:
        raise TrainingError(
            f"--init {pre.path}: pretrained with session_gap_s={pre.session_gap_s}, this run "
            f"uses {cfg.session_gap_s} (--set session_gap_s={pre.session_gap_s})"
        )


def _describe(split: Split, corpus: Corpus, cfg: TrainConfig, refit: bool) -> dict[str, str]:
    """Which users and which time range each number of the report comes from."""
    cut = format_ts_ms(split.t_cut_ms)
    n_tr, n_val, n_test = len(split.train_users), len(split.val_users), len(split.test_users)
    fit_users = (
        f"train + validation users ({n_tr + n_val:,})" if refit else f"train users ({n_tr:,})"
    )
    return {
        "pretraining": f"all users ({len(corpus.users):,}), events before {cut}, "
        f"at most {cfg.pretrain_windows:,} windows; labels unused",
        "selection": f"fine-tuned on train users ({n_tr:,}) before {cut}, "
        f"{cfg.neg_keep:.0%} of negatives; early stopping on validation users ({n_val:,}) "
        f"before {cut}, {cfg.eval_neg_keep:.0%} of negatives",
        "model": f"refit on {fit_users} before {cut} for the selected epochs"
        if refit
        else "the selection run's best epoch",
        "thresholds": f"validation users ({n_val:,}), every event before {cut}, scored by "
        "the selection run's model and baseline",
        "test_metrics": f"test users ({n_test:,}), every event at or after {cut}",
        "baseline": f"GBDT fitted on {fit_users} before {cut}"
        + (" for the selection fit's iterations" if refit else ", early stopping on validation"),
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
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Train a model on a data set and write the checkpoint and its test report to `out`.

    `init`: a `riskstream pretrain` folder (its spec is adopted) or a local Hugging Face
    BERT. `resume`: continue the interrupted run in `out/resume/` (training/resume.py).
    A head without positives in the training or validation split is refused before any
    training (`TrainingError`); `force` goes on with a warning instead.
    """
    began = time.perf_counter()
    device = resolve_device(cfg.device)  # a missing GPU is refused before the data load
    _seed_everything(cfg.seed)
    pre = load_pretrained(init) if init is not None and is_pretrained(init) else None
    if pre is not None:
        _check_pretrained(pre, cfg)
    corpus = load_corpus(
        events,
        labels,
        feedback,
        spec=pre.spec if pre is not None else None,
        session_gap_s=cfg.session_gap_s,
        progress=progress,
    )
    fingerprint = _fingerprint(corpus)  # of the data as read (a resumed run reads it again)
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
    _check_positives(train_ex, val_ex, force)
    # Only now anything is written to `out`: a refused run leaves nothing behind.
    run = {"config": cfg.to_dict(), "data": fingerprint, "init": str(init)}
    store = ResumeStore.resume(out, run) if resume else ResumeStore.fresh(out, run)
    rt = Runtime(device, cfg.amp, progress, store)
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
    # Pretraining uses every event it may: all users' history before the test cut (labels
    # unused; the test users' events after the cut never), the same budget of windows.
    everyone = np.arange(len(corpus.users), dtype=np.int32)
    pretrain_ex = _sample(
        build_examples(corpus, everyone, policy, t_to_ms=t_cut), cfg.pretrain_windows, cfg.seed
    )
    log.info(
        "examples: train %d (negatives kept %.0f%%), validation %d, test %d, pretrain %d",
        len(train_ex),
        cfg.neg_keep * 100,
        len(val_ex),
        len(test_ex),
        len(pretrain_ex),
    )

    model, init_info = _model_for(corpus, cfg, init, pre)
    model.to(rt.device)
    untrained_scores = score(model, corpus, untrained_ex, progress=progress, desc="untrained")
    pre_stats = pretrain(model, corpus, pretrain_ex, cfg, rt)
    pretrained_state = copy.deepcopy(model.state_dict()) if cfg.refit else None

    def validate(m: EventBert) -> float:
        scores = score(m, corpus, stop_ex, progress=progress, desc="validate")
        return _mean_pr_auc(stop_ex.y, scores, stop_ex.weight)

    fine_stats = finetune(model, corpus, train_ex, cfg, validate, rt)

    val_inp = eval_input(corpus, val_ex, score(model, corpus, val_ex, progress=progress))
    thresholds = _thresholds(val_inp, cfg)

    refit_ex: ExampleSet | None = None
    refit_stats = None
    if cfg.refit:
        assert pretrained_state is not None
        fit_users = np.sort(np.concatenate([split.train_users, split.val_users]))
        refit_ex = build_examples(
            corpus, fit_users, policy, t_to_ms=t_cut, neg_keep=cfg.neg_keep, seed=cfg.seed
        )
        model.load_state_dict(pretrained_state)
        epochs = max(1, fine_stats.best_epoch)
        refit_stats = finetune(model, corpus, refit_ex, cfg, None, rt, epochs=epochs, phase="refit")
    test_inp = eval_input(corpus, test_ex, score(model, corpus, test_ex, progress=progress))

    # The baseline: same split, same windows, its own thresholds chosen the same way; with
    # refit, refitted on the same train + validation examples as the model.
    base_began = time.perf_counter()
    x_val = aggregates(corpus, val_ex, progress)
    x_test = aggregates(corpus, test_ex, progress)
    x_train = aggregates(corpus, train_ex, progress)
    baseline = fit_baseline(
        x_train, train_ex.y, train_ex.weight, seed=cfg.seed, X_val=x_val, y_val=val_ex.y
    )
    base_val = replace(val_inp, scores=baseline.predict(x_val))
    base_thresholds = _thresholds(base_val, cfg)
    selection_baseline = baseline  # what the blend is fitted with, on validation
    selected_iterations = baseline.iterations
    if refit_ex is not None:
        baseline = fit_baseline(
            aggregates(corpus, refit_ex, progress),
            refit_ex.y,
            refit_ex.weight,
            seed=cfg.seed,
            iterations=selected_iterations,
        )
    base_test = baseline.predict(x_test)
    base_wall = time.perf_counter() - base_began

    # The stacked ensemble: model and GBDT blended on validation; shipped if it wins there.
    val_raw = selection_baseline.raw(x_val)
    fitted = fit_blend(LABELS, val_inp.scores, val_raw, val_ex.y, val_ex.weight)
    blend, blend_figures = choose_blend(
        cfg.ensemble, fitted, val_inp.scores, val_raw, val_ex.y, val_ex.weight
    )
    ship_blend = blend is not None
    model_thresholds = thresholds
    model_alone = evaluate(test_inp, thresholds)
    if blend is not None:
        thresholds = _thresholds(
            replace(val_inp, scores=blend.combine(val_inp.scores, val_raw)), cfg
        )
        test_inp = replace(test_inp, scores=blend.combine(test_inp.scores, baseline.raw(x_test)))
    log.info(
        "ensemble: %s",
        ", ".join(f"{h} ships {f['ships']}" for h, f in blend_figures.items()) or "model alone",
    )
    # What a shipped score means, measured on validation with the shipped scorer: severity
    # cuts and the shortest window allowed to alert (events/calibration.py).
    shipped_val = blend.combine(val_inp.scores, val_raw) if blend is not None else val_inp.scores
    calibration = {
        head: c.to_dict()
        for head, c in calibrate(val_inp, shipped_val, val_ex.lengths, thresholds).items()
    }

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
            **({"refit_examples": len(refit_ex)} if refit_ex is not None else {}),
        },
        "data": {
            "events": corpus.n_events,
            "users": len(corpus.users),
            "episodes": len(corpus.episodes),
            "known_negatives": len(corpus.negatives),
            "refused": corpus.refused,
            "duplicates": corpus.duplicates,
            "sources": _describe(split, corpus, cfg, cfg.refit),
        },
        "training": {
            "preset": cfg.preset,
            "seed": cfg.seed,
            "device": str(rt.device),
            "amp": str(rt.amp_dtype).removeprefix("torch.") if rt.amp_dtype else "off",
            "model": model.config.to_dict()
            | {"parameters": sum(p.numel() for p in model.parameters())},
            "pretrain": pre_stats.to_dict(),
            "finetune": fine_stats.to_dict(),
            **({"refit": refit_stats.to_dict()} if refit_stats is not None else {}),
            "baseline_iterations": selected_iterations,
            "baseline_wall_s": round(base_wall, 2),
            "untrained_test_pr_auc_mean": round(untrained, 5),
            "init": init_info,
            "wall_s": round(time.perf_counter() - began, 1),
            "torch_threads": torch.get_num_threads(),
        },
        "ensemble": {
            "shipped": ship_blend,
            "mode": cfg.ensemble,
            "blend": (blend or fitted).to_dict(),
            "per_head": blend_figures,
            "note": "heads = the shipped scorer; model_alone = the sequence model without the "
            "GBDT, at its own validation thresholds; baseline = the GBDT alone. Blend weights, "
            "thresholds and the choice come from the validation users.",
            "model_alone": model_alone,
        },
        "calibration": calibration,
    }
    report = finish_report(out, test_inp, base_test, thresholds, base_thresholds, extra)
    meta = {
        "train": cfg.to_dict(),
        "step": pre_stats.steps + fine_stats.steps + (refit_stats.steps if refit_stats else 0),
        "session_gap_s": cfg.session_gap_s,
        "baseline_thresholds": base_thresholds,
        "calibration": calibration,
        # The split, so that nothing downstream has to draw it again.
        "split": {
            "seed": cfg.seed,
            "fractions": list(cfg.split_fractions),
            "test_after_quantile": cfg.test_after_quantile,
            "t_cut_ms": t_cut,
            "val_user_ids": [corpus.users[u].user_id for u in split.val_users.tolist()],
        },
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
        trees=dict(zip(LABELS, baseline.trees(), strict=True)),
        blend=blend,
        model_thresholds=model_thresholds,
    )
    store.clear()
    log.info("checkpoint and report written to %s", out)
    return report


def pretrain_corpus(
    events: Path, out: Path, cfg: TrainConfig, *, progress: bool = True
) -> dict[str, Any]:
    """`riskstream pretrain`: masked-event pretraining on every user's events (no labels, no
    split); writes a folder `train --init` starts from, with its encoding spec."""
    began = time.perf_counter()
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    corpus = load_corpus(events, session_gap_s=cfg.session_gap_s, progress=progress)
    if not corpus.users:
        raise TrainingError(f"--events {events}: no events to pretrain on")
    policy = WindowPolicy(max_events=cfg.max_events, max_age_s=cfg.max_age_s)
    everyone = np.arange(len(corpus.users), dtype=np.int32)
    windows = _sample(build_examples(corpus, everyone, policy), cfg.pretrain_windows, cfg.seed)
    model, _ = _model_for(corpus, cfg, None, None)
    rt = Runtime(device, cfg.amp, progress)
    stats = pretrain(model, corpus, windows, cfg, rt)
    summary = {
        "events": corpus.n_events,
        "users": len(corpus.users),
        "windows": len(windows),
        "pretrain": stats.to_dict(),
        "device": str(rt.device),
        "wall_s": round(time.perf_counter() - began, 1),
    }
    meta = {
        "train": cfg.to_dict(),
        "step": stats.steps,
        "session_gap_s": cfg.session_gap_s,
        "source": {"events": str(events)},
        "summary": summary,
    }
    save_pretrained(out, model, corpus.spec, policy, meta)
    log.info("pretrained encoder written to %s", out)
    return summary
