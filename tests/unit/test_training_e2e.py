"""The trainer end to end on tiny simulated worlds: learns, reports, reproduces, evaluates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from events import CHANNELS, LABELS
from riskstream.cli import main
from simulator import WorldConfig, simulate_world
from tests.conftest import TINY_MODEL_SCHEDULE
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.data import load_corpus
from training.evaluate import evaluate_model
from training.examples import build_examples
from training.loops import score
from training.model import EventBert, ModelConfig, copy_init_weights
from training.train import train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: What a tiny model must reach on the tiny world's test split (mean PR-AUC of both heads);
#: measured 0.960 (fraud 0.921, abnormal_click 1.000) for `tiny_model`'s short schedule with
#: seed 0, 0.945 for the full tiny preset, an untrained model 0.26.
PR_AUC_FLOOR = 0.8
HEAD_KEYS = {
    "pr_auc", "roc_auc", "recall_at_fpr_0.001", "recall_at_fpr_0.01", "threshold", "precision",
    "recall", "episode_recall", "episode_recall_by_kind", "normal_users_alerted_per_1000_per_day",
    "median_detection_delay_events", "median_detection_delay_s",
}  # fmt: skip


def _world(root: Path, seed: int, users: int = 1200) -> Path:
    simulate_world(
        WorldConfig(users=users, days=1.0, seed=seed, attack_share=0.12), root, progress=False
    )
    return root


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    """The session's tiny world (1,200 users, 1 day, seed 5), which `tiny_model` trained on."""
    return tiny_world


@pytest.fixture(scope="module")
def trained(tiny_model: Path) -> tuple[Path, dict[str, Any]]:
    """The session's `tiny_model` (the tiny preset on a short schedule) and its report: one
    training shared with the export and stream tests."""
    return tiny_model, json.loads((tiny_model / "report.json").read_text())


def _mean_pr_auc(heads: dict[str, Any]) -> float:
    return float(np.mean([heads[h]["pr_auc"] for h in LABELS]))


def test_tiny_world_trains_beyond_the_floor_and_the_untrained_model(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    out, report = trained
    learned = _mean_pr_auc(report["heads"])
    assert learned >= PR_AUC_FLOOR
    assert learned > report["training"]["untrained_validation_pr_auc_mean"] + 0.2
    for head in LABELS:
        assert set(report["heads"][head]) >= HEAD_KEYS
        assert set(report["baseline"][head]) >= HEAD_KEYS
    assert "caught_before_purchase" in report["heads"]["fraud"]
    for name in (
        "config.json",
        "model.safetensors",
        "encoding_spec.json",
        "window_policy.json",
        "thresholds.json",
        "report.json",
        "report.md",
        "pr_curves.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = report["split"]
    assert split["check_examples"] > 0
    assert split["choose_examples"] > 0
    assert split["choose_users"] + split["check_users"] <= report["data"]["users"]
    # the shipped model learnt from every event: more windows than the selection fit's
    assert split["final_examples"] > split["fit_examples"]
    assert report["baseline_name"] == "GBDT on all history"


def test_checkpoint_reloads_and_scores_as_trained(
    world: Path, trained: tuple[Path, dict[str, Any]]
) -> None:
    out, _ = trained
    ckpt = load_checkpoint(out)
    assert set(ckpt.thresholds) == set(LABELS)
    assert ckpt.meta.step > 0
    corpus = load_corpus(
        world / "events.jsonl", world / "labels.jsonl", spec=ckpt.spec, progress=False
    )
    examples = build_examples(corpus, np.arange(40, dtype=np.int32), ckpt.policy)
    first = score(ckpt.model, corpus, examples, progress=False)
    again = score(load_checkpoint(out).model, corpus, examples, progress=False)
    assert np.array_equal(first, again)
    assert ((first >= 0) & (first <= 1)).all()


def test_evaluate_on_a_second_world_writes_every_key(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = trained
    other = _world(tmp_path / "other", seed=6, users=800)
    target = tmp_path / "eval" / "report.json"
    report = evaluate_model(
        out, other / "events.jsonl", other / "labels.jsonl", target, progress=False
    )
    on_disk = json.loads(target.read_text())
    for head in LABELS:
        assert set(on_disk["heads"][head]) >= HEAD_KEYS
        assert set(on_disk["baseline"][head]) >= HEAD_KEYS
    assert "caught_before_purchase" in on_disk["heads"]["fraud"]
    # the headline: the checkpoint's own GBDT on all history; the one fitted on this set beside
    assert on_disk["baseline_name"] == "GBDT on all history"
    for head in LABELS:
        assert set(on_disk["baseline_cross_fitted"][head]) >= HEAD_KEYS
        assert on_disk["baseline_cross_fitted"][head] != on_disk["baseline"][head]
    assert "GBDT cross-fitted on this set" in (target.parent / "report.md").read_text()
    assert (target.parent / "report.md").is_file()
    assert (target.parent / "pr_curves.png").is_file()
    assert _mean_pr_auc(report["heads"]) >= PR_AUC_FLOOR - 0.1


def _tiny_bert(path: Path) -> Path:
    config = BertConfig(
        vocab_size=50,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(3)
    BertModel(config).save_pretrained(str(path))
    return path


def test_init_copies_the_encoder_layers_of_a_local_bert(tmp_path: Path) -> None:
    source = _tiny_bert(tmp_path / "bert")
    model = EventBert(
        ModelConfig(
            vocab_sizes=(10,) * len(CHANNELS),
            hidden=64,
            layers=2,
            heads=2,
            intermediate=128,
            max_len=32,
        )
    )
    info = copy_init_weights(model, source)
    theirs = BertModel.from_pretrained(str(source)).state_dict()
    ours = model.bert.state_dict()
    assert info["copied"] > 10
    name = "encoder.layer.1.attention.self.query.weight"
    assert torch.equal(ours[name], theirs[name])
    assert torch.equal(
        ours["embeddings.position_embeddings.weight"],
        theirs["embeddings.position_embeddings.weight"][:32],
    )


def test_train_with_init_and_feedback_labels(world: Path, tmp_path: Path) -> None:
    source = _tiny_bert(tmp_path / "bert")
    report = train(
        world / "events.jsonl",
        world / "labels.jsonl",
        tmp_path / "m",
        # the short schedule, no refit: this is about init and feedback, not the preset's reach
        TrainConfig.for_preset("tiny", **TINY_MODEL_SCHEDULE, refit=False),
        feedback=world / "feedback.jsonl",
        init=source,
        progress=False,
    )
    assert report["training"]["init"]["copied"] > 10
    # Chargebacks add fraud episodes beside the label file's.
    labels = len((world / "labels.jsonl").read_text().splitlines())
    assert report["data"]["episodes"] > labels
    assert _mean_pr_auc(report["heads"]) >= PR_AUC_FLOOR - 0.1


def test_cli_refuses_training_without_labels(
    world: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["train", "--events", str(world / "events.jsonl"), "--out", str(tmp_path / "m")])
    assert code == 1
    assert capsys.readouterr().err.startswith("error: --labels or --feedback")
    code = main(
        [
            "train",
            "--events",
            str(world / "events.jsonl"),
            "--out",
            str(tmp_path / "m"),
            "--labels",
            str(world / "labels.jsonl"),
            "--preset",
            "huge",
        ]
    )
    assert code == 2
    assert "--preset" in capsys.readouterr().err
