"""The trainer's infrastructure: settings from the command line, device plumbing, progress in
logs, the stored GBDT, resuming an interrupted run, `pretrain` + `train --init`, refit."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from events import LABELS, format_ts_ms, parse_ts_ms
from events.aggregates import AGGREGATE_NAMES, LAST_TYPE
from events.trees import TreeModel, tree_models_from_json, tree_models_to_json
from riskstream.cli import main
from tests.conftest import TINY_MODEL_SCHEDULE
from training.baseline import fit_baseline
from training.checkpoint import load_checkpoint
from training.checkpoint_meta import META_VERSION, CheckpointMeta
from training.config import DEFAULT_PRESET, TrainConfig
from training.data import load_corpus
from training.ensemble import choose_blend, fit_blend
from training.evaluate import aggregates
from training.examples import build_examples, split_time
from training.exceptions import TrainingError
from training.loops import Runtime, resolve_device
from training.progress import Progress
from training.resume import ResumeStore
from training.train import train

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")


# --- settings: --config and --set --------------------------------------------------------


def test_config_file_then_set_then_flags_reach_every_field(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"preset": "tiny", "neg_keep": 0.5, "finetune_epochs": 7}))
    cfg = TrainConfig.from_sources(
        None,
        config_file=path,
        sets=["finetune_epochs=2", "refit=false", "val_after_quantile=0.7", "amp=off"],
        seed=4,
        target_fpr=None,
    )
    assert cfg.preset == "tiny"
    assert cfg.max_events == 32  # the tiny preset's default survives
    assert (cfg.neg_keep, cfg.finetune_epochs, cfg.refit, cfg.seed) == (0.5, 2, False, 4)
    assert cfg.val_after_quantile == 0.7
    assert cfg.amp == "off"
    assert TrainConfig.from_sources("tiny", sets=["target_precision=null"]).target_precision is None
    # an int given to a float field is a float; 1e-3 parses
    assert TrainConfig.from_sources(None, sets=["finetune_lr=1e-3"]).finetune_lr == 1e-3


def test_no_preset_named_gives_the_default_presets_settings() -> None:
    cfg = TrainConfig.from_sources(None)
    assert cfg == TrainConfig.for_preset(DEFAULT_PRESET)
    assert (cfg.preset, cfg.max_events) == ("tiny", 32)
    assert TrainConfig() == cfg  # one default: the dataclass's bare fields are the preset's
    assert TrainConfig.from_sources("small").max_events == 64


def test_the_cli_offers_exactly_the_preset_table() -> None:
    from training.cli import Preset
    from training.presets import PRESETS

    assert [p.value for p in Preset] == list(PRESETS)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("bogus=1", "bogus: unknown training setting"),
        ("neg_keep=abc", "neg_keep: must be float"),
        ("finetune_epochs=2.5", "finetune_epochs: must be int"),
        ("refit=maybe", "refit: must be bool"),
        ("val_after_quantile=1.5", "val_after_quantile: must be in"),
        ("device=tpu", "device: must be auto, cpu or cuda"),
        ("neg_keep", "--set neg_keep: expected key=value"),
    ],
)
def test_cli_refuses_bad_settings_in_one_line(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, message: str
) -> None:
    args = ["train", "--events", str(tiny_world / "events.jsonl")]
    args += ["--labels", str(tiny_world / "labels.jsonl"), "--out", str(tmp_path / "m")]
    code = main([*args, "--set", item])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_resume_without_an_interrupted_run_is_refused(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--events", str(tiny_world / "events.jsonl")]
    args += ["--labels", str(tiny_world / "labels.jsonl"), "--out", str(tmp_path / "m")]
    assert main([*args, "--resume"]) == 1
    assert capsys.readouterr().err.startswith("error: --resume: no interrupted run in")


def test_config_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"finetune_epoch": 3}))
    with pytest.raises(TrainingError, match="finetune_epoch: unknown training setting"):
        TrainConfig.from_sources(None, config_file=path)


# --- device ------------------------------------------------------------------------------


@NO_CUDA
def test_cuda_without_a_gpu_is_a_one_line_error(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--events",
            str(tiny_world / "events.jsonl"),
            "--labels",
            str(tiny_world / "labels.jsonl"),
            "--out",
            str(tmp_path / "m"),
            "--device",
            "cuda",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: --device cuda: CUDA is not available")
    assert err.count("\n") == 1
    assert not (tmp_path / "m").exists()


@NO_CUDA
def test_auto_and_cpu_resolve_to_cpu_in_float32() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    rt = Runtime(resolve_device("cpu"), "bf16")
    assert rt.amp_dtype is None  # mixed precision is for CUDA only
    assert rt.scaler() is None
    with rt.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype is torch.float32


# --- progress ----------------------------------------------------------------------------


def test_progress_logs_one_line_instead_of_bars_off_a_terminal(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()  # not a TTY: what a log file or CI sees
    monkeypatch.setattr("sys.stderr", stderr)
    with caplog.at_level(logging.INFO, logger="training.progress"):
        with Progress("fine-tune", 3, enabled=True) as bar:
            for loss in (3.0, 2.0, 1.0):
                bar.update(samples=64, loss=loss)
        with Progress("validate", 3, enabled=True, summary=False) as quiet:
            quiet.update(3)
    assert "\r" not in stderr.getvalue()
    assert stderr.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("fine-tune: 3 batch, 192 samples, loss 2.0000, ")


# --- the stored baseline -----------------------------------------------------------------


def _round_trip(trees: list[TreeModel]) -> list[TreeModel]:
    """Through the checkpoint's JSON and back."""
    text = tree_models_to_json({str(i): t for i, t in enumerate(trees)})
    return list(tree_models_from_json(text).values())


def test_stored_baseline_reproduces_the_fitted_scores() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=(n, len(AGGREGATE_NAMES))).astype(np.float32)
    x[:, LAST_TYPE] = rng.integers(0, 12, size=n)
    x[rng.random(n) < 0.1, 3] = np.nan  # missing values go their learned way
    x[:, 7] = np.nan  # a column empty throughout
    y = np.stack([(x[:, 0] + (x[:, LAST_TYPE] == 4) > 1.2), x[:, 1] > 0], axis=1)
    y[:, 1] &= rng.random(n) < 0.5
    weight = np.where(y.any(axis=1), 1.0, 2.0)
    fitted = fit_baseline(x[:2000], y[:2000], weight[:2000], seed=1, max_iter=60)
    stored = _round_trip(fitted.trees())
    test = x[2000:].copy()
    test[:5, LAST_TYPE] = [40, -1, np.nan, 11, 0]  # unknown, negative, missing categories
    expected = fitted.predict(test)
    got = np.stack([t.predict(test) for t in stored], axis=1)
    assert got.shape == expected.shape == (1000, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(got - expected).max() < 1e-12  # in practice: the same sums
    # a head with one class only is a constant
    one_class = fit_baseline(x[:200], np.zeros((200, 1)), np.ones(200), seed=0)
    (again,) = _round_trip(one_class.trees())
    np.testing.assert_allclose(again.predict(test), one_class.predict(test)[:, 0], atol=1e-12)
    # …whose log-odds are finite and the served ones (they were -inf: with 10 % of the labels a
    # head had no positive, and the blend's choice on validation crashed on it)
    raw = one_class.raw(test)[:, 0]
    assert np.isfinite(raw).all()
    np.testing.assert_array_equal(raw, again.predict_raw(test))
    y_val = np.zeros((1000, 1))
    y_val[:50] = 1.0  # validation has positives the training labels lacked
    probs = rng.random((1000, 1))
    blend = fit_blend(["h"], probs, one_class.raw(test), y_val, np.ones(1000))
    _, figures = choose_blend("auto", blend, probs, one_class.raw(test), y_val, np.ones(1000))
    assert np.isfinite(list(figures["h"]["validation_pr_auc"].values())).all()


def test_a_float64_matrix_fitted_in_place_gives_the_same_gbdt() -> None:
    """`train` builds the GBDT's matrix in float64 and lets the fit zero its empty columns in
    place (no copies): the same trees as from a float32 matrix, and the caller's matrix is only
    touched when asked."""
    rng = np.random.default_rng(2)
    n = 1500  # 12 columns, not the 88 aggregates: binning is slow on a busy machine
    x = rng.normal(size=(n, 12)).astype(np.float32)
    x[rng.random(n) < 0.1, 3] = np.nan
    x[:, 7] = np.nan
    y = np.stack([x[:, 0] + x[:, 2] > 1.2, x[:, 1] > 0.5], axis=1)
    weight = np.where(y.any(axis=1), 1.0, 5.0)
    kw: dict[str, Any] = {"seed": 3, "max_iter": 15, "X_val": x[1000:], "y_val": y[1000:]}
    ref = fit_baseline(x[:1000], y[:1000], weight[:1000], **kw)
    x64 = x[:1000].astype(np.float64)
    kept = fit_baseline(x64, y[:1000], weight[:1000], **kw)
    assert np.isnan(x64[:, 7]).all()  # not asked: untouched
    same = fit_baseline(x64, y[:1000], weight[:1000], overwrite_x=True, **kw)
    assert (x64[:, 7] == 0).all()  # zeroed in place
    test = x[1000:]
    assert ref.iterations == kept.iterations == same.iterations
    np.testing.assert_array_equal(same.predict(test), ref.predict(test))
    np.testing.assert_array_equal(kept.raw(test), ref.raw(test))


# --- the checkpoint's record ----------------------------------------------------------------


@pytest.mark.timeout(600)  # may train the session's tiny model
def test_the_checkpoint_record_is_typed_versioned_and_reads_old_ones(
    tiny_world: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = load_checkpoint(tiny_model)
    assert isinstance(ckpt.meta, CheckpointMeta)
    assert ckpt.meta.meta_version == META_VERSION
    assert ckpt.meta.train == TrainConfig.for_preset("tiny", **TINY_MODEL_SCHEDULE)
    assert ckpt.meta.source.events == str(tiny_world / "events.jsonl")
    assert ckpt.meta.split is not None
    assert ckpt.meta.split.t_val_ms is not None
    config = json.loads((tiny_model / "config.json").read_text())

    def copy_with(record: dict[str, Any], name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f in tiny_model.iterdir():
            if f.is_file():
                (folder / f.name).write_bytes(f.read_bytes())
        (folder / "config.json").write_text(json.dumps(record))
        return folder

    # version 1: no meta_version, a split of recorded users, a setting this version dropped
    old = {k: v for k, v in config.items() if k != "meta_version"}
    old["split"] = {"val_user_ids": ["u1", "u2"], "t_cut_ms": 1234, "fractions": [0.7, 0.3]}
    old["train"] = {**config["train"], "split_fractions": [0.7, 0.15, 0.15]}
    v1 = load_checkpoint(copy_with(old, "v1")).meta
    assert v1.meta_version == META_VERSION  # read into today's record
    assert v1.split is not None
    assert v1.split.val_user_ids == ("u1", "u2")
    assert v1.train == ckpt.meta.train
    assert v1.step == ckpt.meta.step
    # a newer record, or a broken field, is refused naming the file
    newer = copy_with({**config, "meta_version": META_VERSION + 1}, "newer")
    with pytest.raises(TrainingError, match=rf"{newer}/config.json: meta_version \d+ is newer"):
        load_checkpoint(newer)
    broken = copy_with({**config, "step": "many"}, "broken")
    with pytest.raises(TrainingError, match=rf"{broken}/config.json: unreadable checkpoint record"):
        load_checkpoint(broken)
    assert main(["export", "--model", str(newer), "--out", str(tmp_path / "b"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is newer than this riskstream reads" in err


# --- resume ------------------------------------------------------------------------------


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, phase: str, epoch: int) -> None:
    """Crash the run right after it saved `phase` at `epoch` (as a kill would)."""
    real = ResumeStore.save

    def save(self: ResumeStore, snap: Any) -> None:
        real(self, snap)
        if snap.phase == phase and snap.epoch == epoch:
            raise KeyboardInterrupt(f"interrupted after {phase} epoch {epoch}")

    monkeypatch.setattr(ResumeStore, "save", save)


@pytest.mark.slow
@pytest.mark.timeout(600)  # three short trainings: minutes on a busy 2-core machine
def test_resumed_run_equals_the_uninterrupted_one(
    tiny_world: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after pretraining, then after the first fine-tuning epoch, resumed twice:
    the same metrics as `tiny_model` (the same settings and seed, never interrupted, trained from
    scratch). This is also the test that the same seed gives the same model: a run
    from scratch that only compared metrics cost another whole training and proved no more."""
    cfg = TrainConfig.for_preset("tiny", **TINY_MODEL_SCHEDULE)
    args = (tiny_world / "events.jsonl", tiny_world / "labels.jsonl", tmp_path / "m", cfg)
    with monkeypatch.context() as m:
        _interrupt_after(m, "pretrain", 1)
        with pytest.raises(KeyboardInterrupt):
            train(*args, progress=False)
    assert (tmp_path / "m" / "resume" / "pretrain.pt").is_file()
    with monkeypatch.context() as m:
        _interrupt_after(m, "finetune", 1)
        with pytest.raises(KeyboardInterrupt):
            train(*args, progress=False, resume=True)
    saved = json.loads((tmp_path / "m" / "resume" / "run.json").read_text())
    assert saved["phases"]["pretrain"]["done"]
    assert saved["phases"]["finetune"]["epoch"] == 1
    # a changed setting is refused, naming it
    with pytest.raises(TrainingError, match="setting seed is 1, the interrupted run used 0"):
        train(*args[:3], TrainConfig.for_preset("tiny", **TINY_MODEL_SCHEDULE, seed=1),
              progress=False, resume=True)  # fmt: skip
    report = train(*args, progress=False, resume=True)
    expected = json.loads((tiny_model / "report.json").read_text())
    assert report["heads"] == expected["heads"]
    assert report["baseline"] == expected["baseline"]
    assert (
        report["training"]["finetune"]["val_metric"]
        == expected["training"]["finetune"]["val_metric"]
    )
    assert report["training"]["finetune"]["steps"] == expected["training"]["finetune"]["steps"]
    assert not (tmp_path / "m" / "resume").exists()  # a finished run leaves nothing to resume
    with pytest.raises(TrainingError, match="--resume: no interrupted run"):
        train(*args, progress=False, resume=True)


# --- pretrain, train --init, refit, the split in the checkpoint ---------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)  # pretraining and a training with its refit: minutes when the box is busy
def test_pretrain_then_init_with_refit(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Any unlabeled corpus: here the first 40 % of the world's event lines.
    lines = (tiny_world / "events.jsonl").read_text().splitlines(keepends=True)
    unlabeled = tmp_path / "unlabeled.jsonl"
    unlabeled.write_text("".join(lines[: len(lines) * 2 // 5]))
    enc = tmp_path / "enc"
    code = main(
        ["pretrain", "--events", str(unlabeled), "--out", str(enc),
         "--preset", "tiny", "--set", "pretrain_windows=600", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = json.loads((enc / "config.json").read_text())
    assert config["format"] == "riskstream-pretrained/1"
    assert config["summary"]["windows"] == 600
    # a pretrained encoder is not a model to evaluate, and its windows bound the run's
    with pytest.raises(TrainingError, match="fine-tune it first"):
        load_checkpoint(enc)
    with pytest.raises(TrainingError, match="pretrained on windows of up to 32 events"):
        train(
            tiny_world / "events.jsonl", tiny_world / "labels.jsonl", tmp_path / "x",
            TrainConfig.for_preset("tiny", max_events=64), init=enc, progress=False,
        )  # fmt: skip

    out = tmp_path / "m"
    cfg = TrainConfig.for_preset("tiny", pretrain_windows=600, finetune_epochs=1)
    assert cfg.refit  # the default: what ships learns from every event
    report = train(
        tiny_world / "events.jsonl", tiny_world / "labels.jsonl", out, cfg, init=enc,
        progress=False,
    )  # fmt: skip
    t = report["training"]
    assert t["init"]["kind"] == "riskstream-pretrained"
    assert t["init"]["copied"] > 10
    assert t["refit"]["best_epoch"] == t["finetune"]["best_epoch"]  # epochs: the selection's
    per_epoch = t["finetune"]["samples"] / len(t["finetune"]["val_metric"])
    assert t["refit"]["samples"] / t["refit"]["best_epoch"] > per_epoch  # + the last fifth
    assert report["split"]["final_examples"] > report["split"]["fit_examples"]
    sources = report["data"]["sources"]
    assert "refit from the pretrained weights" in sources["model"]
    assert sources["baseline"].startswith("GBDT on all history")
    assert "nothing was fitted or chosen on them" in sources["report"]
    assert np.mean([report["heads"][h]["pr_auc"] for h in LABELS]) >= 0.7

    ckpt = load_checkpoint(out)  # the pretrained encoder's spec is adopted
    assert (out / "encoding_spec.json").read_text() == (enc / "encoding_spec.json").read_text()
    # the split is stored: export's verification draws the same one again
    corpus = load_corpus(
        tiny_world / "events.jsonl", tiny_world / "labels.jsonl", spec=ckpt.spec, progress=False
    )
    split = split_time(corpus, seed=cfg.seed)
    saved = ckpt.meta.split
    assert saved is not None
    assert saved.protocol == "out-of-time"
    assert saved.t_val_ms == split.t_val_ms
    # the stored (refitted) GBDT scores the check users' windows
    assert ckpt.trees is not None
    check_ex = build_examples(corpus, split.check_users, ckpt.policy, t_from_ms=split.t_val_ms)
    x = aggregates(corpus, check_ex, progress=False)
    scores = np.stack([ckpt.trees[h].predict(x) for h in LABELS], axis=1)
    assert scores.shape == (len(check_ex), len(LABELS))
    assert ((scores >= 0) & (scores <= 1)).all()


# --- the data protocol: which events each phase learns from -------------------------------


def test_what_ships_learns_from_every_event_and_every_choice_is_made_out_of_time(
    tiny_world: Path, tmp_path: Path
) -> None:
    from events import WindowPolicy
    from training.train import make_examples

    # A user whose every event falls in the validation period: a late copy of a user's day.
    lines = (tiny_world / "events.jsonl").read_bytes().splitlines()
    first = orjson.loads(lines[0])["user_id"]
    late = []
    for line in lines:
        ev = orjson.loads(line)
        if ev["user_id"] == first:
            ev["user_id"], ev["event_id"] = "late-user", ev["event_id"] + "-late"
            late.append(ev)
    newest_line = max(parse_ts_ms(orjson.loads(x)["ts"]) for x in lines)
    for i, ev in enumerate(late):  # one a second, ending with the data's newest event
        ev["ts"] = format_ts_ms(newest_line - (len(late) - i) * 1000)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*lines, *(orjson.dumps(e) for e in late)]) + b"\n")
    corpus = load_corpus(events, tiny_world / "labels.jsonl", progress=False)
    split = split_time(corpus, seed=0)
    cfg = TrainConfig.for_preset("tiny", neg_keep=1.0, pretrain_windows=100)
    ex = make_examples(corpus, split, WindowPolicy(cfg.max_events, cfg.max_age_s), cfg)

    t, newest = split.t_val_ms, max(int(u.ts_ms[-1]) for u in corpus.users)
    assert (ex.fit.ts_ms < t).all()  # the selection fit never sees the validation period
    for part in (ex.stop, ex.choose, ex.check):
        assert (part.ts_ms >= t).all()
    assert not set(ex.choose.user_index.tolist()) & set(ex.check.user_index.tolist())
    # the shipped refit: every event, the last hour and the late user included
    assert len(ex.final) == corpus.n_events
    assert (ex.final.ts_ms > newest - 3_600_000).sum() > 0
    late_user = corpus.user_index()["late-user"]
    assert (ex.final.user_index == late_user).sum() == len(late)
    assert (ex.fit.user_index == late_user).sum() == 0
    # the yardstick is made the same way: rounds and thresholds chosen out of time, then the
    # GBDT fitted again on every event with those rounds
    from training.train import gbdt_on_all_history

    small = TrainConfig.for_preset("tiny", neg_keep=0.2)
    shipped, thresholds, _ = gbdt_on_all_history(corpus, small)
    selected, same, _ = gbdt_on_all_history(corpus, replace(small, refit=False))
    assert thresholds == same
    assert shipped.iterations == selected.iterations
    x = aggregates(corpus, ex.check.subset(np.arange(200)), progress=False)
    assert not np.array_equal(shipped.predict(x), selected.predict(x))
