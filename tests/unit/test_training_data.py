"""Training data: loading a corpus (dedup, refusals, labels, feedback episodes), user/time splits,
examples and their labels, negative subsampling, windows (parity with the stream) and buckets."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from events import (
    LABELS,
    EncodingSpec,
    InMemoryWindowStore,
    Label,
    WindowPolicy,
    encode_event,
    parse_event,
    select_window,
    windows_to_inputs,
)
from events.encoding import event_id_hash, records_eid
from simulator import WorldConfig, simulate_world
from training.data import Corpus, load_corpus
from training.examples import (
    batch_windows,
    build_examples,
    length_buckets,
    sample_examples,
    split_time,
)
from training.exceptions import DataError, TrainingError

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z
S = 1000
POLICY = WindowPolicy(max_events=16, max_age_s=1800)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate_world(WorldConfig(users=300, days=1.0, seed=3, attack_share=0.2), out, progress=False)
    return out


@pytest.fixture(scope="module")
def corpus(world: Path) -> Corpus:
    return load_corpus(
        world / "events.jsonl",
        world / "labels.jsonl",
        world / "feedback.jsonl",
        progress=False,
        event_ids=True,
    )


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _ev(eid: str, user: str, ts: int, etype: str = "click", **extra: object) -> dict[str, object]:
    return {"event_id": eid, "user_id": user, "ts": ts, "type": etype, **extra}


# --- loading ---------------------------------------------------------------------------------


def test_every_event_in_exactly_one_history_in_ts_order(world: Path, corpus: Corpus) -> None:
    owner = {}
    for line in (world / "events.jsonl").read_bytes().splitlines():
        obj = orjson.loads(line)
        owner[obj["event_id"]] = obj["user_id"]
    assert corpus.n_events == len(owner)
    assert corpus.duplicates == corpus.refused == 0
    assert [u.user_id for u in corpus.users] == sorted({*owner.values()})
    seen: list[str] = []
    for user in corpus.users:
        assert user.event_ids is not None
        assert len(user.event_ids) == len(user.records) == len(user.ts_ms) == len(user.session)
        assert all(owner[e] == user.user_id for e in user.event_ids)
        assert (np.diff(user.ts_ms) >= 0).all()
        # records line up with event ids (the record carries the id hash)
        assert records_eid(user.records).tolist() == [event_id_hash(e) for e in user.event_ids]
        gaps = np.diff(user.ts_ms) > corpus.session_gap_s * S
        assert user.session[0] == 0
        assert (np.diff(user.session) == gaps).all()
        for oid, k in user.order_ids.items():
            assert corpus.spec.event_types[user.records["type"][k]] == "purchase", oid
        seen.extend(user.event_ids)
    assert len(seen) == len(set(seen)) == len(owner)


def test_fitted_spec_gives_the_records_encode_event_gives(world: Path, corpus: Corpus) -> None:
    # Without a spec the loader fits one and fixes the category field afterwards; reloading
    # with that spec encodes directly: both must agree byte for byte.
    again = load_corpus(world / "events.jsonl", spec=corpus.spec, progress=False)
    assert again.spec == corpus.spec
    assert all(u.event_ids is None for u in again.users)  # not asked for: not kept
    assert len(corpus.spec.categories) > 0
    for a, b in zip(corpus.users, again.users, strict=True):
        assert a.records.tobytes() == b.records.tobytes()


def test_duplicate_event_ids_are_dropped_and_counted(world: Path, tmp_path: Path) -> None:
    lines = (world / "events.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines + lines[:7] + lines[100:103]))
    got = load_corpus(path, progress=False)
    assert got.duplicates == 10
    assert got.n_events == len(lines)


def test_bad_event_lines_are_counted_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    good = [orjson.dumps(_ev(f"e{i}", "u1", T0 + i * S)) for i in range(3)]
    bad = [b"{not json", orjson.dumps({"event_id": "x", "ts": T0, "type": "click"})]
    path.write_bytes(b"\n".join([good[0], bad[0], good[1], b"", bad[1], good[2]]) + b"\n")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        got = load_corpus(path, progress=False)
    assert got.refused == 2 == got.parse_stats.refused
    assert got.parse_stats.refused_by_field == {"message": 1, "user_id": 1}
    assert got.n_events == 3
    assert f"{path}:2" in caplog.text
    assert f"{path}:5" in caplog.text


def test_bad_label_line_names_file_and_line(world: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    good = (world / "labels.jsonl").read_bytes().splitlines(keepends=True)[:2]
    labels.write_bytes(b"".join([*good, b'{"user_id":"u1","label":"spam","start":1,"end":2}\n']))
    with pytest.raises(TrainingError, match=rf"{labels}:3: .*label"):
        load_corpus(world / "events.jsonl", labels, progress=False)


def test_episode_labels_are_exact_at_the_edges(tmp_path: Path) -> None:
    start, end = T0 + 10 * S, T0 + 20 * S
    times = [T0, start - 1, start, T0 + 15 * S, end, end + 1, T0 + 30 * S]
    rows = [_ev(f"a{i}", "u1", t) for i, t in enumerate(times)]
    rows += [_ev(f"b{i}", "u2", t) for i, t in enumerate(times)]  # same times, no episode
    events = _write(tmp_path / "events.jsonl", rows)
    labels = _write(
        tmp_path / "labels.jsonl",
        [
            {"user_id": "u1", "label": "fraud", "start": start, "end": end, "kind": "x"},
            {"user_id": "u2", "label": "abnormal_click", "start": end + 1, "end": end + 1},
        ],
    )
    corpus = load_corpus(events, labels, progress=False)
    ex = build_examples(corpus, np.arange(2, dtype=np.int32), WindowPolicy())
    assert len(ex) == 2 * len(times)
    u1 = ex.user_index == 0
    assert ex.y[u1, 0].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert ex.episode[u1, 0].tolist() == [-1, -1, 0, 0, 0, -1, -1]
    assert ex.y[u1, 1].tolist() == [0] * len(times)
    u2 = ex.user_index == 1
    assert ex.y[u2, 0].tolist() == [0] * len(times)
    assert ex.y[u2, 1].tolist() == [0, 0, 0, 0, 0, 1, 0]
    assert ex.episode[u2, 1].tolist() == [-1, -1, -1, -1, -1, 1, -1]
    assert (ex.weight == 1).all()
    assert ex.ts_ms[u1].tolist() == times


def test_feedback_gives_a_fraud_episode_from_the_session_start(tmp_path: Path) -> None:
    t1 = T0 + 3 * 3600 * S  # three hours later: a new session by inactivity
    rows = [
        _ev("e0", "u1", T0, "login"),
        _ev("e1", "u1", t1, "page_view"),
        _ev("e2", "u1", t1 + 60 * S, "add_to_cart"),
        _ev("e3", "u1", t1 + 120 * S, "purchase", order_id="o1", amount=99.0),
        _ev("e4", "u1", t1 + 130 * S, "page_view"),
        _ev("f0", "u2", t1, "purchase", order_id="o2"),
    ]
    events = _write(tmp_path / "events.jsonl", rows)
    feedback = _write(
        tmp_path / "feedback.jsonl",
        [
            {"order_id": "o1", "ts": t1 + 9 * 86_400 * S, "kind": "chargeback"},
            {"order_id": "o-missing", "ts": t1 + 86_400 * S, "kind": "chargeback"},
        ],
    )
    corpus = load_corpus(events, feedback=feedback, progress=False)
    u1 = corpus.users[0]
    assert u1.session.tolist() == [0, 1, 1, 1, 1]
    assert u1.order_ids == {"o1": 3}
    assert corpus.unknown_orders == 1
    (ep,) = corpus.episodes
    assert (ep.user_id, ep.label, ep.start_ms, ep.end_ms) == ("u1", "fraud", t1, t1 + 120 * S)
    assert (ep.kind, ep.source) == ("chargeback", "feedback")
    ex = build_examples(corpus, np.array([0], dtype=np.int32), WindowPolicy())
    assert ex.y[:, 0].tolist() == [0, 1, 1, 1, 0]


def test_bad_feedback_line_names_file_and_line(tmp_path: Path) -> None:
    events = _write(tmp_path / "events.jsonl", [_ev("e0", "u1", T0)])
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_bytes(b'{"order_id":"o1","ts":1793577600000,"kind":"refund"}\n')
    with pytest.raises(TrainingError, match=rf"{feedback}:1: kind"):
        load_corpus(events, feedback=feedback, progress=False)


# --- splits and examples ---------------------------------------------------------------------


def test_split_is_out_of_time_disjoint_deterministic_and_both_halves_have_positives(
    corpus: Corpus,
) -> None:
    split = split_time(corpus, seed=11)
    joined = np.concatenate([split.choose_users, split.check_users])
    assert len(joined) == len(set(joined.tolist()))
    assert split_time(corpus, seed=11) == split
    assert not np.array_equal(split_time(corpus, seed=12).check_users, split.check_users)
    assert split.to_dict()["check_users"] == len(split.check_users)
    t = split.t_val_ms
    all_ts = np.concatenate([u.ts_ms for u in corpus.users])
    assert abs(float(np.mean(all_ts >= t)) - 0.2) < 0.02  # the last fifth of the period
    # every user active in the validation period is in one half, and only those
    active = {i for i, u in enumerate(corpus.users) if len(u) and u.ts_ms[-1] >= t}
    assert set(joined.tolist()) == active
    assert abs(len(split.check_users) - len(active) / 2) <= 2

    users = np.arange(len(corpus.users), dtype=np.int32)
    fit = build_examples(corpus, users, POLICY, t_to_ms=t)
    choose = build_examples(corpus, split.choose_users, POLICY, t_from_ms=t)
    check = build_examples(corpus, split.check_users, POLICY, t_from_ms=t)
    assert (fit.ts_ms < t).all()
    assert (choose.ts_ms >= t).all()
    assert (check.ts_ms >= t).all()
    for part in (fit, choose, check):
        assert (part.positives() > 0).all(), part.positives()
    # validation windows still reach back before the cut for context
    assert (check.start < check.end - 1).any()
    with pytest.raises(DataError, match="val_after_quantile"):
        split_time(corpus, seed=1, val_after_quantile=1.0)


def test_split_does_not_depend_on_file_order(world: Path, corpus: Corpus, tmp_path: Path) -> None:
    lines = (world / "events.jsonl").read_bytes().splitlines(keepends=True)
    random.Random(5).shuffle(lines)
    (tmp_path / "events.jsonl").write_bytes(b"".join(lines))
    shuffled = load_corpus(
        tmp_path / "events.jsonl", world / "labels.jsonl", world / "feedback.jsonl", progress=False
    )
    a, b = split_time(corpus, seed=3), split_time(shuffled, seed=3)
    assert a == b
    assert a != split_time(corpus, seed=4)


def test_negative_subsampling_keeps_positives_and_weights_negatives(corpus: Corpus) -> None:
    users = np.arange(len(corpus.users), dtype=np.int32)
    full = build_examples(corpus, users, POLICY)
    sub = build_examples(corpus, users, POLICY, neg_keep=0.25, seed=4)
    pos_full, pos_sub = full.y.any(axis=1), sub.y.any(axis=1)
    assert pos_sub.sum() == pos_full.sum() > 0
    assert (sub.weight[pos_sub] == 1).all()
    assert np.allclose(sub.weight[~pos_sub], 4.0)
    kept = (~pos_sub).sum() / (~pos_full).sum()
    assert 0.2 < kept < 0.3
    # weighted negatives estimate the full count
    assert abs(sub.weight[~pos_sub].sum() / (~pos_full).sum() - 1) < 0.1
    again = build_examples(corpus, users, POLICY, neg_keep=0.25, seed=4)
    assert np.array_equal(again.ts_ms, sub.ts_ms)
    assert np.array_equal(again.start, sub.start)
    with pytest.raises(TrainingError, match="neg_keep"):
        build_examples(corpus, users, POLICY, neg_keep=0.0)


@pytest.mark.parametrize("policy", [POLICY, WindowPolicy(4, 60), WindowPolicy()], ids=str)
def test_windows_match_the_streaming_path(
    world: Path, corpus: Corpus, policy: WindowPolicy
) -> None:
    sizes = sorted(range(len(corpus.users)), key=lambda i: len(corpus.users[i]))
    chosen = [sizes[0], sizes[len(sizes) // 2], sizes[-1], sizes[-2]]
    wanted = {corpus.users[i].user_id for i in chosen}
    arrivals: dict[str, list[bytes]] = defaultdict(list)
    for line in (world / "events.jsonl").read_bytes().splitlines():
        event = parse_event(line, now_ms=4_000_000_000_000)
        if event.user_id in wanted:
            arrivals[event.user_id].append(encode_event(event, corpus.spec))
    ex = build_examples(corpus, np.array(chosen, dtype=np.int32), policy)
    for ui in chosen:
        idx = np.flatnonzero(ex.user_index == ui)
        offline = batch_windows(corpus, ex, idx)
        store = InMemoryWindowStore(policy)
        user_id = corpus.users[ui].user_id
        online = [select_window(store.append(user_id, r).stored, policy) for r in arrivals[user_id]]
        assert len(online) == len(offline) == len(corpus.users[ui])
        for a, b in zip(offline, online, strict=True):
            assert a.tobytes() == b.tobytes()


def test_length_buckets_cover_every_index_once(corpus: Corpus) -> None:
    ex = build_examples(corpus, np.arange(len(corpus.users), dtype=np.int32), POLICY)
    for shuffle in (False, True):
        batches = length_buckets(ex, 100, shuffle=shuffle, seed=1)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(len(ex)))
        assert all(1 <= len(b) <= 100 for b in batches)
        spread = max(int(np.ptp(ex.lengths[b])) for b in batches)
        assert spread <= 1 or spread < POLICY.max_events // 2
        again = length_buckets(ex, 100, shuffle=shuffle, seed=1)
        assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    plain = np.concatenate(length_buckets(ex, 100, shuffle=False, seed=0))
    assert (np.diff(ex.lengths[plain]) >= 0).all()
    other = length_buckets(ex, 100, shuffle=True, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_batches_feed_windows_to_inputs(corpus: Corpus) -> None:
    ex = build_examples(corpus, np.arange(len(corpus.users), dtype=np.int32), POLICY)
    idx = length_buckets(ex, 32, shuffle=True, seed=0)[0]
    inputs = windows_to_inputs(batch_windows(corpus, ex, idx), corpus.spec)
    assert inputs.lengths.tolist() == ex.lengths[idx].tolist()
    part = ex.subset(idx)
    assert len(part) == len(idx)
    assert np.array_equal(part.y, ex.y[idx])
    assert LABELS == ("fraud", "abnormal_click")


def test_empty_time_range_gives_an_empty_set(corpus: Corpus) -> None:
    users = np.arange(len(corpus.users), dtype=np.int32)
    ex = build_examples(corpus, users, POLICY, t_from_ms=T0 + 10**12)
    assert len(ex) == 0
    assert ex.y.shape == (0, 2)
    assert length_buckets(ex, 8, shuffle=True, seed=0) == []
    assert EncodingSpec.fit([]) == EncodingSpec()  # an empty corpus fits the default spec


def test_examples_built_block_by_block_are_those_of_one_pass(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of users (bounded memory) give the same examples, in the same order, as one
    block holding every user (the single pass): the subsampling draws are one seeded stream."""
    import training.examples as examples_mod

    t = split_time(corpus, seed=0).t_val_ms
    users = np.arange(len(corpus.users), dtype=np.int32)
    labelled = {e.user_id for e in corpus.episodes}
    calm = next(u for u in corpus.users if u.user_id not in labelled)
    dismissed = Label(
        calm.user_id, "fraud", int(calm.ts_ms[0]), int(calm.ts_ms[-1]), "fp", "review"
    )
    judged = Corpus(**{**corpus.__dict__, "negatives": [dismissed], "negatives_known_ms": [0]})
    cases: list[dict[str, object]] = [
        {"t_to_ms": t, "neg_keep": 0.2, "seed": 4, "known_negative_weight": 10.0},
        {"t_from_ms": t, "neg_keep": 0.25, "seed": 1},
        {},
    ]
    fields = ("user_index", "start", "end", "y", "episode", "weight", "ts_ms")
    for kw in cases:
        monkeypatch.setattr(examples_mod, "_BLOCK_USERS", 10**9)
        one = build_examples(judged, users, POLICY, **kw)  # type: ignore[arg-type]
        monkeypatch.setattr(examples_mod, "_BLOCK_USERS", 7)
        blocks = build_examples(judged, users, POLICY, **kw)  # type: ignore[arg-type]
        assert 0 < len(blocks) == len(one)
        if "known_negative_weight" in kw:  # the dismissed user's examples are all kept
            assert (one.weight == 10.0).sum() == len(calm)
        for f in fields:
            np.testing.assert_array_equal(getattr(blocks, f), getattr(one, f), err_msg=f)
    # the pretraining sample: drawn from every event's example without building the rest
    pool = build_examples(corpus, users, POLICY)
    rng = np.random.default_rng(5)
    ref = pool.subset(np.sort(rng.choice(len(pool), 300, replace=False)))
    got = sample_examples(corpus, users, POLICY, 300, 5)
    assert len(got) == 300
    for f in fields:
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)
    assert len(sample_examples(corpus, users[:2], POLICY, 10**9, 5)) == sum(
        len(corpus.users[u]) for u in users[:2]
    )
    with pytest.raises(DataError, match="rows"):
        build_examples(corpus, users, POLICY, neg_keep=0.5, rows=np.arange(3))
