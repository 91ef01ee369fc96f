"""The columnar corpus: `riskstream ingest` writes a Parquet dataset that reads back as the same
corpus as the JSON lines it came from (users, records, ids, sessions, orders, episodes, counts),
byte-identical when written twice, with every refused row named by file, row and field."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from events import EncodingSpec, WindowPolicy, windows_to_inputs
from riskstream.cli import main
from simulator import WorldConfig, simulate_world
from training.data import Corpus, load_corpus
from training.examples import batch_windows, build_examples
from training.exceptions import DataError
from training.ingest import ingest

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate_world(WorldConfig(users=300, days=2.0, seed=3, attack_share=0.2), out, progress=False)
    return out


@pytest.fixture(scope="module")
def dataset(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    ingest(
        world / "events.jsonl",
        out,
        labels=world / "labels.jsonl",
        feedback=world / "feedback.jsonl",
        buckets=7,
        progress=False,
    )
    return out


def assert_same_corpus(a: Corpus, b: Corpus) -> None:
    assert [u.user_id for u in a.users] == [u.user_id for u in b.users]
    for ua, ub in zip(a.users, b.users, strict=True):
        assert ua.records.tobytes() == ub.records.tobytes(), ua.user_id
        assert ua.event_ids == ub.event_ids
        assert np.array_equal(ua.ts_ms, ub.ts_ms)
        assert np.array_equal(ua.session, ub.session)
        assert ua.order_ids == ub.order_ids
    assert a.spec == b.spec
    assert a.episodes == b.episodes
    assert a.known_ms == b.known_ms
    assert a.negatives == b.negatives
    assert a.parse_stats == b.parse_stats
    assert (a.duplicates, a.refused, a.unknown_orders) == (
        b.duplicates,
        b.refused,
        b.unknown_orders,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dataset_reads_back_as_the_jsonl_corpus(world: Path, dataset: Path) -> None:
    from_jsonl = load_corpus(
        world / "events.jsonl",
        world / "labels.jsonl",
        world / "feedback.jsonl",
        progress=False,
        event_ids=True,
    )
    # labels and feedback: those beside
    from_parquet = load_corpus(dataset, progress=False, event_ids=True)
    assert from_jsonl.n_events > 10_000
    assert all(u.event_ids is not None and len(u.event_ids) == len(u) for u in from_parquet.users)
    # without ids (what training reads): the same corpus, no id kept
    lean = load_corpus(dataset, progress=False)
    assert all(u.event_ids is None for u in lean.users)
    assert_same_corpus(from_jsonl, replace(lean, users=from_parquet.users))
    for ua, ub in zip(lean.users, from_parquet.users, strict=True):
        assert ua.records.tobytes() == ub.records.tobytes()
        assert ua.order_ids == ub.order_ids
    assert from_jsonl.episodes
    assert from_jsonl.users
    assert_same_corpus(from_jsonl, from_parquet)
    # ...and so the same examples: windows, labels, weights (and, for the model, inputs).
    policy = WindowPolicy(max_events=16, max_age_s=1800)
    users = np.arange(len(from_jsonl.users), dtype=np.int32)
    a = build_examples(from_jsonl, users, policy, neg_keep=0.3, seed=1)
    b = build_examples(from_parquet, users, policy, neg_keep=0.3, seed=1)
    for name in ("user_index", "start", "end", "y", "episode", "weight", "ts_ms"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    idx = np.arange(0, len(a), 97)
    ia = windows_to_inputs(batch_windows(from_jsonl, a, idx), from_jsonl.spec)
    ib = windows_to_inputs(batch_windows(from_parquet, b, idx), from_parquet.spec)
    assert np.array_equal(ia.features, ib.features)
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert len({p["day"] for p in manifest["partitions"]}) >= 2
    assert {p["bucket"] for p in manifest["partitions"]} == set(range(7))


def test_a_given_spec_reads_the_same_either_way(world: Path, dataset: Path) -> None:
    spec = EncodingSpec(categories=("books", "toys"))
    other_edges = replace(spec, price_edges=(1.0, 10.0, 100.0))  # records re-encoded on reading
    for s in (spec, other_edges):
        a = load_corpus(world / "events.jsonl", spec=s, progress=False, event_ids=True)
        b = load_corpus(dataset, spec=s, progress=False, kept_labels=False, event_ids=True)
        assert_same_corpus(a, b)


def test_written_twice_byte_identical_and_jobs_do_not_matter(world: Path, tmp_path: Path) -> None:
    src = world / "events.jsonl"
    ingest(src, tmp_path / "a", labels=world / "labels.jsonl", buckets=5, progress=False)
    ingest(src, tmp_path / "b", labels=world / "labels.jsonl", buckets=5, progress=False)
    ingest(src, tmp_path / "c", labels=world / "labels.jsonl", buckets=5, progress=False,
           jobs=2, chunk_bytes=200_000)  # fmt: skip
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b") == _files(tmp_path / "c")
    # Written again over itself: replaced, the same bytes.
    ingest(src, tmp_path / "a", labels=world / "labels.jsonl", buckets=5, progress=False)
    assert _files(tmp_path / "a") == first


def test_bad_rows_are_refused_with_file_row_and_field(tmp_path: Path) -> None:
    rows = [
        orjson.dumps({"event_id": "e1", "user_id": "u1", "ts": T0, "type": "click"}),
        b"{not json",
        orjson.dumps({"event_id": "e2", "ts": T0, "type": "click"}),  # no user_id
        b"",
        orjson.dumps({"event_id": "e1", "user_id": "u2", "ts": T0 + 5, "type": "click"}),  # again
        orjson.dumps(
            {"event_id": "e3", "user_id": "u1", "ts": T0 + 1, "type": "bogus", "price": -1}
        ),
        orjson.dumps(
            {"event_id": "e4", "user_id": "u1", "ts": T0 - 1, "type": "wish", "category": "toys"}
        ),
    ]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(rows) + b"\n")
    report = ingest(src, tmp_path / "ds", progress=False)
    assert (report.lines, report.events, report.duplicates, report.refused) == (7, 2, 1, 3)
    refused = [
        orjson.loads(x) for x in (tmp_path / "ds" / "refused.jsonl").read_bytes().splitlines()
    ]
    assert [(r["file"], r["row"], r["field"]) for r in refused] == [
        ("events.jsonl", 2, "message"),
        ("events.jsonl", 3, "user_id"),
        ("events.jsonl", 6, "price"),
    ]
    assert report.refused_by_field == {"message": 1, "user_id": 1, "price": 1}
    assert_same_corpus(
        load_corpus(src, progress=False), load_corpus(tmp_path / "ds", progress=False)
    )


def test_not_a_dataset_is_refused(tmp_path: Path, world: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt"):
        ingest(world / "events.jsonl", tmp_path, progress=False)
    with pytest.raises(DataError, match="not an events dataset"):
        load_corpus(tmp_path, progress=False)


def test_cli_ingest_and_simulate_parquet_then_train_reads_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "jsonl"
    args = ["--users", "150", "--days", "1", "--seed", "4", "--attack-share", "0.2", "--quiet"]
    assert main(["simulate", "--out", str(jsonl), *args]) == 0
    assert main(["simulate", "--out", str(tmp_path / "pq"), "--format", "parquet", *args]) == 0
    code = main([
        "ingest", str(jsonl / "events.jsonl"), "--labels", str(jsonl / "labels.jsonl"),
        "--feedback", str(jsonl / "feedback.jsonl"), "--out", str(tmp_path / "ing"), "--quiet",
    ])  # fmt: skip
    assert code == 0
    assert "events written" in capsys.readouterr().out
    # simulate --format parquet writes what ingest writes from simulate's JSON lines.
    assert _files(tmp_path / "pq") == _files(tmp_path / "ing")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "dataset.json", "events", "feedback.jsonl", "labels.jsonl", "refused.jsonl",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_on_the_dataset_gives_the_jsonl_metrics(tmp_path: Path) -> None:
    """Same world, same seed, tiny schedule: the same report from either backend."""
    from training.config import TrainConfig
    from training.train import train

    world = tmp_path / "world"
    simulate_world(
        WorldConfig(users=600, days=1.0, seed=5, attack_share=0.15), world, progress=False
    )
    ingest(world / "events.jsonl", tmp_path / "ds", labels=world / "labels.jsonl", progress=False)
    cfg = TrainConfig.for_preset("tiny", pretrain_windows=400, finetune_epochs=1)
    a = train(world / "events.jsonl", world / "labels.jsonl", tmp_path / "a", cfg, progress=False)
    b = train(tmp_path / "ds", None, tmp_path / "b", cfg, progress=False)
    assert a["heads"] == b["heads"]
    assert a["baseline"] == b["baseline"]
