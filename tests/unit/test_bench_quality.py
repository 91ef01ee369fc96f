"""`riskstream bench quality`: the tables' arithmetic, and the whole pipeline on tiny worlds
(simulate two worlds per kind and seed, train, evaluate on the other world, tabulate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events import LABELS
from riskstream.bench.quality import (
    QualityPlan,
    bench_quality,
    efficiency,
    summarise,
    transfer_table,
)


def _run(world: str, seed: int, model: float, gbdt: float, **kw: object) -> dict[str, object]:
    names = ("pr_auc", "episode_recall", "normal_users_alerted_per_1000_per_day",
             "median_detection_delay_s")  # fmt: skip
    figures: dict[str, float | None] = dict.fromkeys(names)

    def scored(v: float) -> dict[str, dict[str, float | None]]:
        return {h: {**figures, "pr_auc": v} for h in LABELS}

    return {"world": world, "seed": seed, "labelled_share": kw.get("share", 1.0),
            "pretrained_init": kw.get("init", False), "model": scored(model),
            "model_alone": scored(model), "gbdt": scored(gbdt),
            "gbdt_64": scored(float(kw.get("ref", gbdt)))}  # type: ignore[arg-type]  # fmt: skip


def test_summary_gives_mean_spread_and_difference_per_world_and_head() -> None:
    runs = [_run("hard", 0, 0.9, 0.8, ref=0.95), _run("hard", 1, 0.7, 0.8, ref=0.95),
            _run("default", 0, 1.0, 1.0)]  # fmt: skip
    rows = {(r["world"], r["head"], r["figure"]): r for r in summarise(runs)}
    hard = rows[("hard", "fraud", "pr_auc")]
    assert hard["seeds"] == 2
    assert hard["model"] == "0.8000 ± 0.1414"
    assert hard["gbdt"] == "0.8000 ± 0.0000"
    assert hard["model − gbdt"] == 0.0
    assert hard["model − gbdt_64"] == -0.15  # the GBDT over 64-event windows: the yardstick
    assert rows[("hard", "fraud", "episode_recall")]["model"] is None  # no figure: no row value
    assert rows[("default", "abnormal_click", "pr_auc")]["seeds"] == 1


def test_efficiency_table_separates_shares_and_pretraining() -> None:
    runs = [_run("hard", 0, 0.6, 0.7, share=0.1), _run("hard", 0, 0.75, 0.7, share=0.1, init=True)]
    (fraud, _) = efficiency(runs)
    assert fraud["labelled share"] == 0.1
    assert fraud["model"].startswith("0.6000")
    assert fraud["model, pretrained init"].startswith("0.7500")
    assert fraud["gbdt"].startswith("0.7000")


def test_transfer_table_counts_kept_promises_and_the_cap() -> None:
    def cells(promised: float | None, realised: float | None) -> dict[str, object]:
        cell = {"threshold": 0.5, "promised": promised, "realised": realised}
        return {h: cell for h in LABELS}

    runs = []
    for seed, (p, q) in enumerate([(4.0, 5.1), (4.0, 2.0), (3.0, 6.0), (None, 1.0)]):
        run = _run("hard", seed, 0.9, 0.8)
        run["threshold_transfer"] = {"quantile": cells(p, q)}
        runs.append(run)
    (fraud, clicks) = transfer_table(runs)
    assert fraud["method"] == "quantile"
    assert clicks["head"] == "abnormal_click"
    assert (
        fraud["promised→realised"] == "h0: 4.0→5.1, h1: 4.0→2.0, h2: 3.0→6.0"
    )  # no promise: left out
    assert fraud["within ±30 %"] == "1/3"  # 5.1 is within 4.0 ± 30 %; 2.0 and 6.0 are not
    assert fraud["≤ 5"] == "1/3"
    assert fraud["median error"] == 0.5


def test_plan_refuses_an_unknown_world(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        QualityPlan(out=tmp_path, worlds=("nope",))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_pipeline_runs_on_tiny_worlds_and_resumes(tmp_path: Path) -> None:
    plan = QualityPlan(
        out=tmp_path,
        seeds=(0,),
        worlds=("default", "hard"),
        users=700,
        days=0.5,
        preset="tiny",
        attack_share=0.12,
        settings={"pretrain_windows": 500, "finetune_epochs": 1, "refit": False},
    )
    result = bench_quality(plan)
    data = json.loads((tmp_path / "quality.json").read_text())
    assert {r["world"] for r in data["runs"]} == {"default", "hard"}
    for run in data["runs"]:
        # the stored GBDT (fitted on the training world) was scored on the other world
        for scorer in ("model", "model_alone", "gbdt"):
            for head in LABELS:
                pr = run[scorer][head]["pr_auc"]
                assert pr is None or 0.0 <= pr <= 1.0
        assert any(run["gbdt"][h]["pr_auc"] is not None for h in LABELS)
    assert {r["world"] for r in result.rows} == {"default", "hard"}
    assert "| world | head | figure |" in (tmp_path / "quality.md").read_text()
    # A second run reuses every finished run: nothing is trained again.
    model = next((tmp_path / "runs").glob("*/model/model.safetensors"))
    before = model.stat().st_mtime_ns
    bench_quality(plan)
    assert model.stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_efficiency_table_pretrains_and_starts_from_it(tmp_path: Path) -> None:
    plan = QualityPlan(
        out=tmp_path,
        seeds=(0,),
        worlds=("default",),
        users=500,
        days=0.5,
        preset="tiny",
        attack_share=0.12,
        label_shares=(0.5,),
        pretrain_users=700,
        pretrain_windows=420,
        settings={"pretrain_windows": 300, "finetune_epochs": 1, "refit": False},
    )
    bench_quality(plan)
    data = json.loads((tmp_path / "quality.json").read_text())
    pretrained = json.loads((tmp_path / "pretrained" / "default-w420" / "config.json").read_text())
    assert pretrained["train"]["pretrain_windows"] == 420  # its own budget, not the runs' 300
    runs = {(r["labelled_share"], r["pretrained_init"]) for r in data["runs"]}
    assert runs == {(1.0, False), (0.5, False), (0.5, True)}
    rows = {(r["labelled share"], r["head"]): r for r in data["efficiency"]}
    assert set(rows) == {(s, h) for s in (0.5, 1.0) for h in LABELS}
    for head in LABELS:  # half the labels: each column from its own single run
        row = rows[0.5, head]
        for column in ("gbdt", "model", "model, pretrained init"):
            assert row[column] is None or row[column].endswith("(1)")
        if row["model"] is not None:  # where the model was scored, so was the pretrained one
            assert row["model, pretrained init"] is not None
        assert rows[1.0, head]["model, pretrained init"] is None  # 1.0 was not asked for
