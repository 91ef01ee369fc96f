"""`riskstream train`, read top to bottom as its phases, and `riskstream pretrain`.

The data protocol (training.examples.split_time): every choice — early stopping, the GBDT's
boosting rounds, the blend, the thresholds, the calibration — is made out of time, on the last
part of the period (`val_after_quantile`), by half of the users active there; the report is
judged on the other half. Then the model is fine-tuned again from its pretrained weights, and
the GBDT refitted, on every event of every labelled user with those choices: what ships has
learnt from all the history it was given. The report's baseline is the GBDT a risk team would
fit on the same history ("GBDT on all history"), made the same way.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import average_precision_score

from events import LABELS, WindowPolicy, format_ts_ms
from events.trees import Blend
from training.baseline import Baseline, fit_baseline
from training.calibration import calibrate
from training.checkpoint import (
    Pretrained,
    is_pretrained,
    load_pretrained,
    save_checkpoint,
    save_pretrained,
)
from training.checkpoint_meta import CheckpointMeta, EnsembleRecord, SourceRecord, SplitRecord
from training.config import TrainConfig
from training.data import Corpus, load_corpus
from training.distributed import init_from_env, is_main
from training.ensemble import choose_blend, fit_blend
from training.evaluate import aggregates, eval_input, finish_report
from training.examples import ExampleSet, Split, build_examples, sample_examples, split_time
from training.exceptions import TrainingError
from training.loops import PhaseStats, Runtime, finetune, pretrain, resolve_device, score
from training.metrics import (
    EvalInput,
    choose_threshold,
    evaluate,
    normal_users_alerted_per_1000_per_day,
)
from training.model import EventBert, ModelConfig, config_from_init, copy_init_weights
from training.presets import PRESETS
from training.resume import ResumeStore
from training.thresholds import carry_threshold, concat_inputs, rate_interval

__all__ = ["gbdt_on_all_history", "pretrain_corpus", "train"]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


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
    sizes = PRESETS[cfg.preset].model
    model_cfg = ModelConfig.for_spec(corpus.spec, **sizes, max_len=cfg.max_events)
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


# --- the phases' results -------------------------------------------------------------------


@dataclass(frozen=True)
class Examples:
    """The windows each phase reads; `t` below is the validation period's start."""

    fit: ExampleSet  # labelled users' events before t, negatives subsampled: selection fit
    stop: ExampleSet  # choose users' events from t, negatives subsampled: early stopping
    choose: ExampleSet  # choose users' events from t, every one: rounds, blend, thresholds
    check: ExampleSet  # check users' events from t, every one: the report
    pretrain: ExampleSet  # every user's events, at most the budget: masked-event pretraining
    final: ExampleSet  # labelled users' every event, negatives subsampled: the shipped refit
    labelled_users: int
    # labelled normal users' every event before t (both models learnt them): the reference
    # on which thresholds are carried to the refit model (training.thresholds)
    reference: ExampleSet

    def sizes(self) -> dict[str, int]:
        """Windows per phase, for the report."""
        return {
            "fit_examples": len(self.fit),
            "early_stopping_examples": len(self.stop),
            "choose_examples": len(self.choose),
            "check_examples": len(self.check),
            "pretrain_windows": len(self.pretrain),
            "final_examples": len(self.final),
            "threshold_reference_examples": len(self.reference),
            "labelled_users": self.labelled_users,
        }


@dataclass(frozen=True)
class ModelRun:
    """The sequence model's selection run: pretraining, then fine-tuning before t."""

    pretrain: PhaseStats
    finetune: PhaseStats
    untrained_pr_auc: float
    pretrained_state: dict[str, torch.Tensor] | None  # for the refit


@dataclass(frozen=True)
class GbdtRun:
    """The GBDT on all history before t, its rounds and thresholds chosen like the model's.

    Its scores, not its matrices: 88 aggregates per example are ~350 B, held through the
    refit (the run's peak) for two columns of log-odds."""

    model: Baseline
    raw_choose: npt.NDArray[np.float64]  # log-odds on the choose users' examples
    raw_check: npt.NDArray[np.float64]  # on the check users'
    check_scores: npt.NDArray[np.float64]  # predict() on the check users': the report's
    thresholds: dict[str, float]
    wall_s: float


@dataclass(frozen=True)
class Choices:
    """What the choose users decided, and the selection run's scores on the check users."""

    blend: Blend | None
    fitted: Blend
    figures: dict[str, Any]
    thresholds: dict[str, float]  # the shipped scorer's
    model_thresholds: dict[str, float]  # the sequence model alone's
    calibration: dict[str, Any]
    check: EvalInput  # the shipped scorer, selection run, check users
    model_alone: dict[str, Any]
    chosen_on: EvalInput  # the shipped scorer, selection run, choose users


@dataclass(frozen=True)
class Shipped:
    """What goes in the checkpoint besides the model's weights."""

    gbdt: Baseline
    refit: PhaseStats | None


# --- the phases ----------------------------------------------------------------------------


def make_examples(
    corpus: Corpus, split: Split, policy: WindowPolicy, cfg: TrainConfig, *, model: bool = True
) -> Examples:
    """Each phase's windows (see `Examples`). The selection fit learns only the decisions
    known before t (training.data.Corpus.known_before); judging uses every label. Without
    `model` (the GBDT alone), no pretraining windows and no early-stopping sample."""
    t = split.t_val_ms
    labelled = np.arange(len(corpus.users), dtype=np.int32)
    if cfg.labelled_share < 1.0:
        keep = max(1, round(len(labelled) * cfg.labelled_share))
        pick = np.random.default_rng(cfg.seed + 1).choice(len(labelled), keep, replace=False)
        labelled = labelled[np.sort(pick)]
    subsampled: dict[str, Any] = {
        "neg_keep": cfg.neg_keep,
        "seed": cfg.seed,
        "known_negative_weight": cfg.known_negative_weight,
    }
    everyone = np.arange(len(corpus.users), dtype=np.int32)
    fit = build_examples(corpus.known_before(t), labelled, policy, t_to_ms=t, **subsampled)
    none = fit.subset(np.zeros(0, dtype=np.int64))
    flagged = {e.user_id for e in corpus.episodes}
    normal = np.array([u for u in labelled.tolist() if corpus.users[u].user_id not in flagged],
                      dtype=np.int32)  # fmt: skip
    return Examples(
        fit=fit,
        stop=build_examples(
            corpus,
            split.choose_users,
            policy,
            t_from_ms=t,
            neg_keep=cfg.eval_neg_keep,
            seed=cfg.seed,
        )
        if model
        else none,
        choose=build_examples(corpus, split.choose_users, policy, t_from_ms=t),
        check=build_examples(corpus, split.check_users, policy, t_from_ms=t),
        pretrain=sample_examples(corpus, everyone, policy, cfg.pretrain_windows, cfg.seed)
        if model
        else none,
        final=build_examples(corpus, labelled, policy, **subsampled) if cfg.refit else fit,
        labelled_users=len(labelled),
        reference=build_examples(corpus, normal, policy, t_to_ms=t)
        if model and cfg.refit
        else none,
    )


def check_positives(ex: Examples, force: bool) -> None:
    """Refuse (or, with `force`, warn) before training when a head has no positive example
    to learn from or to choose its threshold on."""
    fit, choose = ex.fit.positives(), ex.choose.positives()
    empty = [
        f"{head} has {int(fit[h]):,} positive events to fit on and {int(choose[h]):,} to "
        "choose its threshold on"
        for h, head in enumerate(LABELS)
        if fit[h] == 0 or choose[h] == 0
    ]
    if not empty:
        return
    what = "; ".join(empty)
    if not force:
        raise TrainingError(
            f"{what}: too few labelled episodes to train and judge it (a larger world: more "
            "--users, --days or --attack-share; or --force to train anyway)"
        )
    log.warning(
        "%s: training anyway (--force); that head's threshold, severity and scores may mean little",
        what,
    )


def select_model(
    model: EventBert, corpus: Corpus, ex: Examples, cfg: TrainConfig, rt: Runtime, progress: bool
) -> ModelRun:
    """Pretrain on every event (labels unused), then fine-tune on the events before t with
    early stopping on the choose users' validation events."""
    untrained = score(model, corpus, ex.stop, progress=progress, desc="untrained")
    pre_stats = pretrain(model, corpus, ex.pretrain, cfg, rt)
    pretrained_state = copy.deepcopy(model.state_dict()) if cfg.refit else None

    def validate(m: EventBert) -> float:
        scores = score(m, corpus, ex.stop, progress=progress, desc="validate")
        return _mean_pr_auc(ex.stop.y, scores, ex.stop.weight)

    fine_stats = finetune(model, corpus, ex.fit, cfg, validate, rt)
    return ModelRun(
        pre_stats,
        fine_stats,
        _mean_pr_auc(ex.stop.y, untrained, ex.stop.weight),
        pretrained_state,
    )


def select_gbdt(
    corpus: Corpus, ex: Examples, choose_inp: EvalInput, cfg: TrainConfig, progress: bool
) -> GbdtRun:
    """The GBDT on the 88 window aggregates of the same events before t, boosting rounds
    chosen by early stopping on the choose users, thresholds there the same way."""
    began = time.perf_counter()
    # In float64, as sklearn fits: it would copy float32 matrices, per head.
    x_fit = aggregates(corpus, ex.fit, progress, dtype=np.float64)
    x_choose = aggregates(corpus, ex.choose, progress, dtype=np.float64)
    model = fit_baseline(
        x_fit,
        ex.fit.y,
        ex.fit.weight,
        seed=cfg.seed,
        X_val=x_choose,
        y_val=ex.choose.y,
        overwrite_x=True,
    )
    del x_fit
    scores = model.predict(x_choose).astype(np.float64)
    thresholds = _thresholds(replace(choose_inp, scores=scores), cfg)
    raw_choose = model.raw(x_choose)
    del x_choose
    x_check = aggregates(corpus, ex.check, progress, dtype=np.float64)
    raw_check, check_scores = model.raw(x_check), model.predict(x_check)
    del x_check
    return GbdtRun(
        model, raw_choose, raw_check, check_scores, thresholds, time.perf_counter() - began
    )


def choose(
    model: EventBert,
    corpus: Corpus,
    ex: Examples,
    choose_inp: EvalInput,
    gbdt: GbdtRun,
    cfg: TrainConfig,
    progress: bool,
) -> Choices:
    """On the choose users: the blend of model and GBDT (shipped if it wins there), the
    thresholds and the calibration of what ships. On the check users: its scores."""
    probs = score(model, corpus, ex.choose, progress=progress)
    inp = replace(choose_inp, scores=probs.astype(np.float64))
    check = eval_input(corpus, ex.check, score(model, corpus, ex.check, progress=progress))
    model_thresholds = _thresholds(inp, cfg)
    raw = gbdt.raw_choose
    fitted = fit_blend(LABELS, inp.scores, raw, ex.choose.y, ex.choose.weight)
    blend, figures = choose_blend(
        cfg.ensemble, fitted, inp.scores, raw, ex.choose.y, ex.choose.weight
    )
    model_alone = evaluate(check, model_thresholds)
    thresholds, shipped = model_thresholds, inp.scores
    if blend is not None:
        shipped = blend.combine(inp.scores, raw)
        thresholds = _thresholds(replace(inp, scores=shipped), cfg)
        check = replace(check, scores=blend.combine(check.scores, gbdt.raw_check))
    log.info(
        "ensemble: %s",
        ", ".join(f"{h} ships {f['ships']}" for h, f in figures.items()) or "model alone",
    )
    # What a shipped score means, measured with the shipped scorer: severity cuts and the
    # shortest window allowed to alert (events/calibration.py).
    calibration = {
        head: c.to_dict()
        for head, c in calibrate(inp, shipped, ex.choose.lengths, thresholds).items()
    }
    return Choices(
        blend,
        fitted,
        figures,
        thresholds,
        model_thresholds,
        calibration,
        check,
        model_alone,
        replace(inp, scores=np.asarray(shipped, dtype=np.float64)),
    )


def refit(
    model: EventBert,
    corpus: Corpus,
    ex: Examples,
    run: ModelRun,
    gbdt: GbdtRun,
    cfg: TrainConfig,
    rt: Runtime,
    progress: bool,
) -> Shipped:
    """The shipped model and GBDT: fitted again on every event, with the selected epochs
    and boosting rounds (`refit` off: the selection run's, which never saw t onwards)."""
    if not cfg.refit:
        return Shipped(gbdt.model, None)
    assert run.pretrained_state is not None
    model.load_state_dict(run.pretrained_state)
    epochs = max(1, run.finetune.best_epoch)
    stats = finetune(model, corpus, ex.final, cfg, None, rt, epochs=epochs, phase="refit")
    return Shipped(_refit_gbdt(corpus, ex, gbdt.model, cfg, progress), stats)


def _refit_gbdt(
    corpus: Corpus, ex: Examples, selected: Baseline, cfg: TrainConfig, progress: bool
) -> Baseline:
    """The GBDT fitted again on every event (`ex.final`) with the selected boosting rounds."""
    x_final = aggregates(corpus, ex.final, progress, dtype=np.float64)
    return fit_baseline(
        x_final,
        ex.final.y,
        ex.final.weight,
        seed=cfg.seed,
        iterations=selected.iterations,
        overwrite_x=True,
    )


@dataclass(frozen=True)
class Reference:
    """The threshold reference set (`Examples.reference`) and its aggregates."""

    inp: EvalInput  # scores unset
    x: F32 | None  # only where the blend ships


@dataclass(frozen=True)
class RefScores:
    """One model's scores on the reference set: the sequence model's and the shipped scorer's."""

    model: npt.NDArray[np.float64]
    shipped: npt.NDArray[np.float64]


def reference_scores(
    model: EventBert,
    gbdt: Baseline,
    blend: Blend | None,
    corpus: Corpus,
    ex: Examples,
    ref: Reference,
    progress: bool,
) -> RefScores:
    """The reference set scored by `model` (and `gbdt`, where the blend ships)."""
    probs = np.asarray(
        score(model, corpus, ex.reference, progress=progress, desc="reference"), dtype=np.float64
    )
    shipped = probs if blend is None or ref.x is None else blend.combine(probs, gbdt.raw(ref.x))
    return RefScores(probs, np.asarray(shipped, dtype=np.float64))


@dataclass(frozen=True)
class Transfer:
    """The shipped thresholds (by `threshold_transfer`), and every method's for the report."""

    thresholds: dict[str, float]
    model_thresholds: dict[str, float]
    report: dict[str, Any]


def _promise(inp: EvalInput, h: int, threshold: float, seed: int, on: str) -> dict[str, Any]:
    rate = normal_users_alerted_per_1000_per_day(inp, h, threshold)
    interval = rate_interval(inp, h, threshold, seed=seed)
    return {
        "threshold": threshold,
        "normal_users_alerted_per_1000_per_day": rate,
        "interval_90": None if interval is None else [round(v, 3) for v in interval],
        "measured_on": on,
    }


def transfer_thresholds(
    cfg: TrainConfig,
    choices: Choices,
    ref: Reference | None,
    before: RefScores | None,
    after: RefScores | None,
) -> Transfer:
    """Each method's thresholds for the refit scorer and the promise it makes (normal users
    alerted per 1,000 per day, with a 90 % bootstrap interval over users); the shipped ones
    are `cfg.threshold_transfer`'s. Without a refit (no reference) the selection run ships
    and so do its thresholds."""
    check_on = "check users, selection run (out of time, nothing chosen on them)"
    none: dict[str, dict[str, Any]] = {
        head: _promise(choices.check, h, choices.thresholds[head], cfg.seed, check_on)
        for h, head in enumerate(LABELS)
    }
    if ref is None or before is None or after is None or len(ref.inp.ts_ms) == 0:
        report = {"transfer": "none", "promise": none, "methods": {"none": none}}
        return Transfer(dict(choices.thresholds), dict(choices.model_thresholds), report)
    inp = ref.inp
    refit_inp = replace(inp, scores=after.shipped)
    pooled = concat_inputs(choices.chosen_on, choices.check)
    pooled_thresholds = _thresholds(pooled, cfg)
    # The reference set holds normal users only: a precision target cannot be measured on it
    # (no true alerts), so with one the refit scorer gets the selection's threshold carried.
    by_precision = cfg.target_precision is not None
    refit_thresholds = _thresholds(refit_inp, cfg)
    methods: dict[str, dict[str, Any]] = {"none": none, "quantile": {}, "refit": {}, "pooled": {}}
    for h, head in enumerate(LABELS):
        carried = carry_threshold(inp, before.shipped, after.shipped, h, choices.thresholds[head])
        methods["quantile"][head] = none[head] | {"threshold": carried}
        methods["refit"][head] = _promise(
            refit_inp, h, refit_thresholds[head], cfg.seed,
            "the refit scorer on normal users' events before the validation period (learnt)",
        )  # fmt: skip
        methods["pooled"][head] = _promise(
            pooled, h, pooled_thresholds[head], cfg.seed,
            "every validation user (choose and check), selection run: where it was chosen",
        ) | {"threshold": carry_threshold(inp, before.shipped, after.shipped, h,
                                          pooled_thresholds[head])}  # fmt: skip
        for m in methods.values():
            selection_t = (
                pooled_thresholds[head] if m is methods["pooled"] else choices.thresholds[head]
            )
            m[head]["reference_rate_selection"] = normal_users_alerted_per_1000_per_day(
                replace(inp, scores=before.shipped), h, selection_t
            )
            m[head]["reference_rate_refit"] = normal_users_alerted_per_1000_per_day(
                refit_inp, h, m[head]["threshold"]
            )
    how = cfg.threshold_transfer
    if by_precision:
        del methods["refit"]
        if how == "refit":
            how = "quantile"
            log.info("thresholds: target_precision needs positives, which the normal users' "
                     "reference lacks: the selection's thresholds carried by quantile")  # fmt: skip
    thresholds: dict[str, float] = {h: float(methods[how][h]["threshold"]) for h in LABELS}
    model_thresholds = dict(choices.model_thresholds)
    if how == "refit":
        model_thresholds = _thresholds(replace(inp, scores=after.model), cfg)
    elif how != "none":
        model_thresholds = {
            str(head): carry_threshold(
                inp, before.model, after.model, h, choices.model_thresholds[head]
            )
            for h, head in enumerate(LABELS)
        }
    report = {
        "transfer": how,
        "promise": methods[how],
        "methods": methods,
        "reference": f"{len(inp.ts_ms):,} events of {len(np.unique(inp.user_ids)):,} labelled "
        "normal users before the validation period, scored by the selection run and the refit",
    }
    return Transfer(thresholds, model_thresholds, report)


def gbdt_on_all_history(
    corpus: Corpus, cfg: TrainConfig, progress: bool = False
) -> tuple[Baseline, dict[str, float], WindowPolicy]:
    """The yardstick a risk team would build, made as `train` makes its own: the GBDT on the
    window aggregates (window `cfg.max_events`), rounds and thresholds chosen out of time,
    then refitted on every event (with `cfg.refit`). Returns it, its thresholds, its window."""
    policy = WindowPolicy(max_events=cfg.max_events, max_age_s=cfg.max_age_s)
    split = split_time(
        corpus, seed=cfg.seed, val_after_quantile=cfg.val_after_quantile,
        check_share=cfg.check_share,
    )  # fmt: skip
    ex = make_examples(corpus, split, policy, cfg, model=False)
    choose_inp = eval_input(corpus, ex.choose, np.zeros((len(ex.choose), len(LABELS))))
    gbdt = select_gbdt(corpus, ex, choose_inp, cfg, progress)
    if not cfg.refit:
        return gbdt.model, gbdt.thresholds, policy
    return _refit_gbdt(corpus, ex, gbdt.model, cfg, progress), gbdt.thresholds, policy


def _describe(corpus: Corpus, split: Split, ex: Examples, cfg: TrainConfig) -> dict[str, str]:
    """Which events each phase learnt from or was judged on."""
    t = format_ts_ms(split.t_val_ms)
    n_choose, n_check = len(split.choose_users), len(split.check_users)
    labelled = f"every labelled user ({ex.labelled_users:,})"
    return {
        "pretraining": f"every user ({len(corpus.users):,}), every event, at most "
        f"{cfg.pretrain_windows:,} windows; labels unused",
        "selection": f"fine-tuned on {labelled}, events before {t}, {cfg.neg_keep:.0%} of "
        f"negatives, decisions known before {t}; early stopping on {n_choose:,} users' "
        f"events from {t} ({cfg.eval_neg_keep:.0%} of negatives)",
        "choices": f"GBDT rounds, blend, thresholds and calibration on those {n_choose:,} "
        f"users' events from {t}, every event",
        "report": f"the selection run (model and GBDT fitted before {t}) on the other "
        f"{n_check:,} users' events from {t}: nothing was fitted or chosen on them",
        "model": f"refit from the pretrained weights on {labelled}, every event, "
        f"{cfg.neg_keep:.0%} of negatives, for the selected epochs"
        if cfg.refit
        else f"the selection run's best epoch (refit off: it never saw events from {t})",
        "thresholds": {
            "refit": "chosen again for the refit on every event of the labelled users with no "
            f"episode before {t} (learnt by both models)",
            "quantile": f"the choose users' thresholds carried to the refit as the same share "
            f"of normal users' days before {t}",
            "pooled": f"chosen on all {n_choose + n_check:,} users' events from {t}, carried to "
            f"the refit as the same share of normal users' days before {t}",
            "none": "the choose users' thresholds as chosen for the selection run",
        }[cfg.threshold_transfer if cfg.refit else "none"],
        "baseline": "GBDT on all history: HistGradientBoosting on the 88 window aggregates "
        "of the same events as the model, rounds and thresholds chosen the same way"
        + ("; the shipped one refitted on every event" if cfg.refit else ""),
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
    """Train a model on a data set and write the checkpoint and its report to `out`.

    `init`: a `riskstream pretrain` folder (its spec is adopted) or a local Hugging Face
    BERT. `resume`: continue the interrupted run in `out/resume/` (training/resume.py).
    A head without positives to fit on or to choose a threshold on is refused before any
    training (`TrainingError`); `force` goes on with a warning instead.

    Under torchrun (WORLD_SIZE > 1) every rank runs this with its shard of each batch
    (training/distributed.py); rank 0 writes `out`, the others a scratch folder.
    """
    if not init_from_env(resolve_device(cfg.device)):
        return _train(events, labels, out, cfg, feedback, init, progress, resume, force)
    if resume:
        raise TrainingError("--resume: not supported with --nproc > 1 yet; resume on one process")
    if is_main():
        return _train(events, labels, out, cfg, feedback, init, progress, False, force)
    with tempfile.TemporaryDirectory(prefix="riskstream-rank-") as scratch:
        return _train(events, labels, Path(scratch), cfg, feedback, init, False, False, force)


def _train(
    events: Path,
    labels: Path | None,
    out: Path,
    cfg: TrainConfig,
    feedback: Path | None,
    init: Path | None,
    progress: bool,
    resume: bool,
    force: bool,
) -> dict[str, Any]:
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
    split = split_time(
        corpus,
        seed=cfg.seed,
        val_after_quantile=cfg.val_after_quantile,
        check_share=cfg.check_share,
    )
    ex = make_examples(corpus, split, policy, cfg)
    check_positives(ex, force)
    log.info("examples: %s", ", ".join(f"{k} {v:,}" for k, v in ex.sizes().items()))
    # Only now anything is written to `out`: a refused run leaves nothing behind.
    run = {"config": cfg.to_dict(), "data": fingerprint, "init": str(init)}
    store = ResumeStore.resume(out, run) if resume else ResumeStore.fresh(out, run)
    rt = Runtime(device, cfg.amp, progress, store)
    model, init_info = _model_for(corpus, cfg, init, pre)
    model.to(rt.device)

    choose_inp = eval_input(corpus, ex.choose, np.zeros((len(ex.choose), len(LABELS))))
    model_run = select_model(model, corpus, ex, cfg, rt, progress)
    gbdt = select_gbdt(corpus, ex, choose_inp, cfg, progress)
    choices = choose(model, corpus, ex, choose_inp, gbdt, cfg, progress)
    ref, before = None, None
    if cfg.refit and len(ex.reference):
        ref = Reference(
            eval_input(corpus, ex.reference, np.zeros((len(ex.reference), len(LABELS)))),
            aggregates(corpus, ex.reference, progress) if choices.blend is not None else None,
        )
        before = reference_scores(model, gbdt.model, choices.blend, corpus, ex, ref, progress)
    shipped = refit(model, corpus, ex, model_run, gbdt, cfg, rt, progress)
    after = None
    if ref is not None:
        after = reference_scores(model, shipped.gbdt, choices.blend, corpus, ex, ref, progress)
    transfer = transfer_thresholds(cfg, choices, ref, before, after)

    extra = _report_extra(corpus, split, ex, cfg, rt, model, model_run, gbdt, choices, shipped)
    extra["thresholds"] = transfer.report
    extra["training"] |= {"init": init_info, "wall_s": round(time.perf_counter() - began, 1)}
    report = finish_report(
        out,
        choices.check,
        gbdt.check_scores,
        choices.thresholds,
        gbdt.thresholds,
        extra,
    )
    meta = CheckpointMeta(
        train=cfg,
        step=model_run.pretrain.steps
        + model_run.finetune.steps
        + (shipped.refit.steps if shipped.refit else 0),
        session_gap_s=cfg.session_gap_s,
        baseline_thresholds=gbdt.thresholds,
        calibration=choices.calibration,
        # The split, so that nothing downstream has to guess it (export's verification set).
        split=SplitRecord(
            seed=cfg.seed,
            val_after_quantile=cfg.val_after_quantile,
            check_share=cfg.check_share,
            t_val_ms=split.t_val_ms,
        ),
        source=SourceRecord(
            str(events), str(labels) if labels else None, str(feedback) if feedback else None
        ),
        ensemble=EnsembleRecord(choices.blend, transfer.model_thresholds)
        if choices.blend is not None
        else None,
    )
    save_checkpoint(
        out,
        model,
        corpus.spec,
        policy,
        transfer.thresholds,
        meta,
        trees=dict(zip(LABELS, shipped.gbdt.trees(), strict=True)),
    )
    store.clear()
    log.info("checkpoint and report written to %s", out)
    return report


def _report_extra(
    corpus: Corpus,
    split: Split,
    ex: Examples,
    cfg: TrainConfig,
    rt: Runtime,
    model: EventBert,
    model_run: ModelRun,
    gbdt: GbdtRun,
    choices: Choices,
    shipped: Shipped,
) -> dict[str, Any]:
    """The report's sections besides the heads' and the baseline's figures."""
    return {
        "split": split.to_dict() | ex.sizes(),
        "data": {
            "events": corpus.n_events,
            "users": len(corpus.users),
            "episodes": len(corpus.episodes),
            "known_negatives": len(corpus.negatives),
            "refused": corpus.refused,
            "duplicates": corpus.duplicates,
            "sources": _describe(corpus, split, ex, cfg),
        },
        "baseline_name": "GBDT on all history",
        "training": {
            "preset": cfg.preset,
            "seed": cfg.seed,
            "device": str(rt.device),
            "amp": str(rt.amp_dtype).removeprefix("torch.") if rt.amp_dtype else "off",
            "model": model.config.to_dict()
            | {"parameters": sum(p.numel() for p in model.parameters())},
            "pretrain": model_run.pretrain.to_dict(),
            "finetune": model_run.finetune.to_dict(),
            **({"refit": shipped.refit.to_dict()} if shipped.refit is not None else {}),
            "baseline_iterations": gbdt.model.iterations,
            "baseline_wall_s": round(gbdt.wall_s, 2),
            "untrained_validation_pr_auc_mean": round(model_run.untrained_pr_auc, 5),
            "torch_threads": torch.get_num_threads(),
        },
        "ensemble": {
            "shipped": choices.blend is not None,
            "mode": cfg.ensemble,
            "blend": (choices.blend or choices.fitted).to_dict(),
            "per_head": choices.figures,
            "note": "heads = the shipped scorer; model_alone = the sequence model without the "
            "GBDT, at its own thresholds; baseline = the GBDT on all history alone. Blend "
            "weights, thresholds and the choice come from the choose users.",
            "model_alone": choices.model_alone,
        },
        "calibration": choices.calibration,
    }


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
    windows = sample_examples(corpus, everyone, policy, cfg.pretrain_windows, cfg.seed)
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
