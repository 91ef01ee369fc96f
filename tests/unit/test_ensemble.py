"""The stacked ensemble: trees stored as JSON and scored by numpy exactly as sklearn does, the
same trees as an ONNX graph, the blend fitted and chosen on validation, and a bundle that serves
the checkpoint's blended scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from events.trees import Blend, TreeModel, tree_models_from_json, tree_models_to_json
from training.ensemble import _fit_non_negative, choose_blend, fit_blend


def _fitted(seed: int = 0) -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((4000, 6)).astype(np.float32)
    x[:, 4] = rng.integers(0, 12, len(x))  # a categorical column (like last_type)
    x[::7, 1] = np.nan
    x[::13, 4] = np.nan
    y = ((x[:, 0] + (x[:, 4] % 3 == 1) + np.nan_to_num(x[:, 1], nan=0.8)) > 1.3).astype(int)
    clf = HistGradientBoostingClassifier(
        max_iter=60, categorical_features=[4], early_stopping=False, random_state=seed
    ).fit(x, y)
    test = rng.random((2000, 6)).astype(np.float32)
    test[:, 4] = rng.integers(-2, 16, len(test))  # negatives and categories never seen
    test[::5, 2] = np.nan
    test[::9, 4] = np.nan
    return clf, test


def test_trees_score_exactly_as_sklearn_after_a_json_round_trip() -> None:
    clf, test = _fitted()
    model = tree_models_from_json(tree_models_to_json({"h": TreeModel.from_sklearn(clf)}))["h"]
    assert np.abs(model.predict_raw(test) - clf.decision_function(test)).max() < 1e-9
    assert np.abs(model.predict(test) - clf.predict_proba(test)[:, 1]).max() < 1e-9
    assert np.allclose(TreeModel.constant(0.2).predict(test[:3]), 0.2)


def test_tree_graph_matches_the_numpy_trees(tmp_path: Path) -> None:
    import onnxruntime as ort

    from export.graphs import gbdt_to_onnx
    from export.manifest import GBDT_INPUT

    clf, test = _fitted(1)
    trees = {"fraud": TreeModel.from_sklearn(clf), "abnormal_click": TreeModel.constant(0.01)}
    gbdt_to_onnx(trees, test.shape[1], tmp_path / "g.onnx")
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {GBDT_INPUT: test})[0]
    want = np.stack([trees[h].predict_raw(test) for h in trees], axis=1)
    assert got.shape == (len(test), 2)
    assert np.abs(got - want).max() < 1e-4


def test_the_blend_weighs_what_ranks_and_ships_only_when_it_wins() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((3000, 2))
    y[rng.random(3000) < 0.1, 0] = 1
    y[rng.random(3000) < 0.1, 1] = 1
    noise = rng.normal(size=(3000, 2))
    model = 1 / (1 + np.exp(-(4 * y[:, [0]] + noise[:, [0]] - 2)))  # knows fraud only
    model = np.concatenate([model, np.full((3000, 1), 0.5)], axis=1)
    gbdt = np.stack([noise[:, 1], 4 * y[:, 1] + noise[:, 1] - 2], axis=1)  # knows clicks only
    w = np.ones(3000)
    blend = fit_blend(("fraud", "abnormal_click"), model, gbdt, y, w)
    (a0, b0, _), (a1, b1, _) = blend.weights["fraud"], blend.weights["abnormal_click"]
    assert a0 > 5 * abs(b0)
    assert b1 > 5 * abs(a1)
    shipped, figures = choose_blend("auto", blend, model, gbdt, y, w)
    assert shipped is not None
    # fraud: the model already ranks it, the GBDT adds nothing → the model alone; clicks: the
    # GBDT alone or the blend, whichever validation prefers — never the model alone.
    assert figures["fraud"]["ships"] == "model"
    assert shipped.weights["fraud"] == (1.0, 0.0, 0.0)
    assert figures["abnormal_click"]["ships"] in ("gbdt", "blend")
    pr = figures["abnormal_click"]["validation_pr_auc"]
    assert pr[figures["abnormal_click"]["ships"]] > pr["model"]
    off, _ = choose_blend("off", blend, model, gbdt, y, w)
    assert off is None
    on, _ = choose_blend("on", blend, model, gbdt, y, w)
    assert on == blend
    useless = np.zeros_like(gbdt)  # trees that know nothing: the model alone ships
    blind = fit_blend(("fraud", "abnormal_click"), model, useless, y, w)
    assert choose_blend("auto", blind, model, useless, y, w)[0] is None
    with pytest.raises(ValueError, match="ensemble"):
        choose_blend("sometimes", blend, model, gbdt, y, w)
    assert Blend.from_dict(blend.to_dict()) == blend


def test_an_ensemble_bundle_serves_the_checkpoints_blended_scores(
    tiny_model: Path, tiny_world: Path, tmp_path: Path
) -> None:
    from export.build import ExportOptions, export
    from export.exceptions import HashMismatchError
    from export.loader import load_bundle
    from training.data import load_corpus
    from training.evaluate import checkpoint_scorer
    from training.examples import batch_windows, build_examples

    # Whether `auto` shipped a blend on the tiny world or not: make this copy blend.
    ckpt = tmp_path / "model"
    shutil.copytree(tiny_model, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["ensemble"] = {"blend": {"fraud": [1.0, 0.5, -0.2], "abnormal_click": [0.8, 0.3, 0.1]}}
    (ckpt / "config.json").write_text(json.dumps(config))
    scorer = checkpoint_scorer(ckpt)
    assert scorer.checkpoint is not None
    assert scorer.checkpoint.blend is not None

    manifest = export(ckpt, tmp_path / "bundle", ExportOptions(windows=1000, progress=False))
    assert manifest.ensemble["gbdt"] in manifest.files
    bundle = load_bundle(tmp_path / "bundle", "cpu", variant="fp32")
    assert bundle.gbdt is not None
    corpus = load_corpus(
        tiny_world / "events.jsonl", spec=scorer.spec, session_gap_s=scorer.session_gap_s,
        progress=False,
    )  # fmt: skip
    examples = build_examples(corpus, np.arange(60, dtype=np.int32), scorer.policy)
    want = scorer.score(corpus, examples, progress=False)
    got = bundle.score_windows(batch_windows(corpus, examples, np.arange(len(examples))))
    assert np.abs(got - want).max() <= 1e-4
    # The model alone scores differently: the trees are really in the served score.
    alone = load_bundle(tmp_path / "bundle", "cpu", variant="fp32")
    alone.gbdt = None
    plain = alone.score_windows(batch_windows(corpus, examples, np.arange(len(examples))))
    assert np.abs(plain - got).max() > 1e-3

    graph = tmp_path / "bundle" / manifest.ensemble["gbdt"]
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(HashMismatchError):
        load_bundle(tmp_path / "bundle", "cpu")


def test_the_blend_weights_are_sklearns_where_positive_and_never_negative() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.2).astype(int)
    w = rng.uniform(0.5, 2.0, 4000)
    both = np.stack([3 * y + rng.normal(size=4000), 2 * y + rng.normal(size=4000)], 1)
    free = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-12).fit(both, y, sample_weight=w)
    a, b, c = _fit_non_negative(both, y, w)
    assert np.allclose([a, b, c], [*free.coef_[0], free.intercept_[0]], atol=1e-3)
    # A second scorer that ranks backwards: sklearn leans on its negative, ours drops it.
    backwards = np.stack([both[:, 0], -both[:, 1]], 1)
    assert LogisticRegression(C=1.0).fit(backwards, y, sample_weight=w).coef_[0][1] < -0.5
    a, b, _ = _fit_non_negative(backwards, y, w)
    assert a > 1.0
    assert b == 0.0
