"""Evaluation side of the trainer: metrics, thresholds, the GBDT baseline and the report."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from events import LABELS, RECORD_DTYPE, EncodingSpec, Event, encode_event, windows_to_inputs
from events.aggregates import AGGREGATE_NAMES, window_aggregates
from events.contract import Label
from training.baseline import fit_baseline
from training.metrics import (
    EvalInput,
    choose_threshold,
    evaluate,
    head_metrics,
    normal_user_mask,
    normal_users_alerted_per_1000_per_day,
    pr_curve,
)
from training.report import write_report

T0 = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
DAY = 86_400_000
SPEC = EncodingSpec()


def _inp(
    scores: np.ndarray,
    y: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    users: np.ndarray | None = None,
    ts: np.ndarray | None = None,
    episode: np.ndarray | None = None,
    episodes: list[Label] | None = None,
    first_purchase: dict[int, int | None] | None = None,
) -> EvalInput:
    n = len(scores)
    return EvalInput(
        scores=scores,
        y=y,
        weight=np.ones(n) if weight is None else weight,
        user_ids=np.array([f"u{i}" for i in range(n)], dtype=object) if users is None else users,
        ts_ms=T0 + np.arange(n, dtype=np.int64) * 1000 if ts is None else ts,
        episode=np.full((n, 2), -1, dtype=np.int32) if episode is None else episode,
        episodes=episodes or [],
        first_purchase_ms=first_purchase or {},
    )


def _random_inp(n: int, pos_rate: float, seed: int) -> EvalInput:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < pos_rate).astype(float)
    return _inp(rng.random((n, 2)), y)


# --- event-level metrics ------------------------------------------------------------------


def test_perfect_scorer() -> None:
    n = 40
    y = np.zeros((n, 2))
    episode = np.full((n, 2), -1, dtype=np.int32)
    y[5:10, 0] = 1
    episode[5:10, 0] = 0
    y[20:23, 1] = 1
    episode[20:23, 1] = 1
    users = np.array(["a"] * 10 + [f"n{i}" for i in range(10)] + ["b"] * 20, dtype=object)
    episodes = [
        Label("a", "fraud", T0 + 5000, T0 + 9000, "card_testing"),
        Label("b", "abnormal_click", T0 + 20_000, T0 + 22_000, "click_bot"),
    ]
    inp = _inp(y.copy(), y, users=users, episode=episode, episodes=episodes)
    out = evaluate(inp, {"fraud": 0.5, "abnormal_click": 0.5})
    assert set(out) == set(LABELS)
    for m in out.values():
        assert m["pr_auc"] == 1.0
        assert m["roc_auc"] == 1.0
        assert m["episode_recall"] == 1.0
        assert m["precision"] == m["recall"] == 1.0
        assert m["recall_at_fpr_0.001"] == 1.0
        assert m["median_detection_delay_events"] == 0.0
    assert out["fraud"]["positives"] == 5.0
    assert out["fraud"]["events"] == 40.0
    assert "caught_before_purchase" in out["fraud"]
    assert "caught_before_purchase" not in out["abnormal_click"]
    # Everything is plain JSON, with undefined values as null rather than NaN.
    json.dumps(out, allow_nan=False)


def test_random_scorer_pr_auc_is_the_positive_rate() -> None:
    inp = _random_inp(100_000, 0.05, seed=1)
    for head in range(2):
        m = head_metrics(inp, head, 0.5)
        rate = float(inp.y[:, head].mean())
        assert m["pr_auc"] == pytest.approx(rate, abs=0.005)
        assert m["roc_auc"] == pytest.approx(0.5, abs=0.02)
        assert m["recall_at_fpr_0.01"] == pytest.approx(0.01, abs=0.01)


def test_weights_act_like_duplicated_rows() -> None:
    rng = np.random.default_rng(2)
    n = 300
    scores = np.round(rng.random((n, 2)), 2)  # ties included on purpose
    y = (rng.random((n, 2)) < scores * 0.6).astype(float)
    weight = rng.integers(1, 4, size=n).astype(float)
    weighted = _inp(scores, y, weight=weight)
    rep = np.repeat(np.arange(n), weight.astype(int))
    duplicated = _inp(scores[rep], y[rep])
    plain = _inp(scores, y)
    keys = ("pr_auc", "roc_auc", "recall_at_fpr_0.01", "precision", "recall", "positives")
    for head in range(2):
        a = head_metrics(weighted, head, 0.5)
        b = head_metrics(duplicated, head, 0.5)
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-12), key
        assert a["pr_auc"] != pytest.approx(head_metrics(plain, head, 0.5)["pr_auc"])
        report_a, report_b = a["classification_report"], b["classification_report"]
        assert report_a["weighted avg"]["f1-score"] == pytest.approx(
            report_b["weighted avg"]["f1-score"]
        )
        pa, ra = pr_curve(weighted, head)
        pb, rb = pr_curve(duplicated, head)
        np.testing.assert_allclose(pa, pb)
        np.testing.assert_allclose(ra, rb)


def test_eval_input_checks_shapes() -> None:
    with pytest.raises(ValueError, match="scores"):
        _inp(np.zeros((4, 1)), np.zeros((4, 2)))


def test_one_class_gives_none_not_nan() -> None:
    inp = _inp(np.full((5, 2), 0.3), np.zeros((5, 2)))
    m = head_metrics(inp, 0, 0.5)
    assert m["pr_auc"] is None
    assert m["roc_auc"] is None
    assert m["recall"] is None
    assert m["precision"] is None  # nothing alerted
    assert m["episode_recall"] is None
    json.dumps(m, allow_nan=False)


# --- thresholds ---------------------------------------------------------------------------


def _alert_rate_by_hand(inp: EvalInput, head: int, threshold: float) -> float:
    """The definition, spelt out in Python: alerted (normal user, UTC day) pairs."""
    normal = normal_user_mask(inp)
    pairs = set()
    alerted = set()
    for u, t, s, ok in zip(
        inp.user_ids, inp.ts_ms.tolist(), inp.scores[:, head], normal, strict=True
    ):
        if ok:
            pairs.add((u, t // DAY))
            if s >= threshold:
                alerted.add((u, t // DAY))
    users = {u for u, _ in pairs}
    days = max((int(inp.ts_ms.max()) - int(inp.ts_ms.min())) / DAY, 1 / 24)
    return len(alerted) / (len(users) * days) * 1000


def _world(seed: int) -> EvalInput:
    """600 normal users over 3 days plus 20 fraud users who score high (must not count)."""
    rng = np.random.default_rng(seed)
    users, ts, fraud = [], [], []
    for u in range(620):
        k = int(rng.integers(2, 12))
        users += [f"u{u}"] * k
        ts += (T0 + rng.integers(0, 3 * DAY, size=k)).tolist()
        fraud += [u >= 600] * k
    n = len(users)
    is_fraud = np.array(fraud)
    scores = rng.beta(1, 8, size=(n, 2)).astype(np.float32).astype(np.float64)
    scores[is_fraud] = np.maximum(scores[is_fraud], 0.9)
    y = np.zeros((n, 2))
    y[is_fraud, 0] = 1
    episode = np.full((n, 2), -1, dtype=np.int32)
    fraud_users = sorted({u for u, f in zip(users, fraud, strict=True) if f})
    index = {u: i for i, u in enumerate(fraud_users)}
    episode[is_fraud, 0] = [index[u] for u, f in zip(users, fraud, strict=True) if f]
    episodes = [Label(u, "fraud", T0, T0 + 3 * DAY) for u in fraud_users]
    return _inp(
        scores,
        y,
        users=np.array(users, dtype=object),
        ts=np.array(ts, dtype=np.int64),
        episode=episode,
        episodes=episodes,
    )


def test_normal_user_mask_excludes_episode_users() -> None:
    inp = _world(3)
    normal = normal_user_mask(inp)
    assert not normal[inp.y[:, 0] > 0].any()
    assert normal[inp.y[:, 0] == 0].all()
    assert len(set(inp.user_ids[normal].tolist())) == 600


@pytest.mark.parametrize("seed", [3, 4])
def test_default_threshold_binds_at_five_per_1000_per_day(seed: int) -> None:
    inp = _world(seed)
    for head in range(2):
        t = choose_threshold(inp, head)
        rate = normal_users_alerted_per_1000_per_day(inp, head, t)
        assert rate is not None
        assert rate == pytest.approx(_alert_rate_by_hand(inp, head, t))
        assert rate <= 5.0
        assert head_metrics(inp, head, t)["normal_users_alerted_per_1000_per_day"] == rate
        # lowering it a bit (to the next normal score below) breaks the budget
        s = inp.scores[normal_user_mask(inp), head]
        lower = float(s[s < t].max())
        assert _alert_rate_by_hand(inp, head, lower) > 5.0
        assert float(np.float32(t)) == t  # survives a float32 round trip


def test_threshold_for_target_precision_and_fpr() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y1 = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0], dtype=float)
    inp = _inp(np.stack([scores, scores], 1), np.stack([y1, y1], 1))
    # precision at ≥0.6 is 3/4; at ≥0.3 it is 4/7 (below 0.75): lowest reaching 0.75 is ~0.6
    t = choose_threshold(inp, 0, target_precision=0.75)
    assert 0.5 < t <= 0.6
    assert head_metrics(inp, 0, t)["precision"] == 0.75
    # weighted FPR: 6 negatives; ≤ 1/6 allows one false positive (0.7)
    t = choose_threshold(inp, 1, target_fpr=1 / 6)
    assert 0.5 < t <= 0.6
    t = choose_threshold(inp, 0, target_precision=1.0)  # the top two events are positives
    assert 0.7 < t <= 0.8
    assert head_metrics(inp, 0, t)["recall"] == 0.5


# --- episodes ------------------------------------------------------------------------------


def _episode_world() -> EvalInput:
    """Four fraud episodes (users a-d, 5 events 10 s apart) and one normal user."""
    users, ts, ep, scores = [], [], [], []
    alerts = {
        "a": [0.1, 0.2, 0.9, 0.3, 0.95],  # first alert at position 2 (20 s), after purchase
        "b": [0.8, 0.1, 0.1, 0.1, 0.1],  # alert at once, purchase later
        "c": [0.1, 0.1, 0.1, 0.1, 0.1],  # never alerted, purchase
        "d": [0.1, 0.1, 0.1, 0.1, 0.7],  # alerted at position 4, no purchase
    }
    for i, (u, s) in enumerate(alerts.items()):
        users += [u] * 5
        ts += [T0 + DAY * i + 10_000 * k for k in range(5)]
        ep += [i] * 5
        scores += s
    users += ["n"] * 3
    ts += [T0 + k for k in range(3)]
    ep += [-1] * 3
    scores += [0.0] * 3
    n = len(users)
    episode = np.full((n, 2), -1, dtype=np.int32)
    episode[:, 0] = ep
    y = (episode >= 0).astype(float)
    kinds = ["card_testing", "card_testing", "account_takeover", None]
    episodes = [
        Label(u, "fraud", T0 + DAY * i, T0 + DAY * i + 40_000, kinds[i])
        for i, u in enumerate(alerts)
    ]
    first_purchase: dict[int, int | None] = {0: T0 + 15_000, 1: T0 + DAY + 30_000}
    first_purchase |= {2: T0 + 2 * DAY + 10_000, 3: None}
    return _inp(
        np.stack([scores, np.zeros(n)], 1),
        y,
        users=np.array(users, dtype=object),
        ts=np.array(ts, dtype=np.int64),
        episode=episode,
        episodes=episodes,
        first_purchase=first_purchase,
    )


def test_detection_delay_and_episode_recall() -> None:
    m = head_metrics(_episode_world(), 0, 0.5)
    assert m["episode_recall"] == 0.75
    # caught: a (2 events, 20 s), b (0, 0 s), d (4, 40 s) → medians 2 events, 20 s
    assert m["median_detection_delay_events"] == 2.0
    assert m["median_detection_delay_s"] == 20.0


def test_caught_before_purchase() -> None:
    inp = _episode_world()
    # with a purchase: a (alert 20 s > purchase 15 s: too late), b (before), c (never) → 1/3
    assert head_metrics(inp, 0, 0.5)["caught_before_purchase"] == pytest.approx(1 / 3)
    # alerting at the purchase's own ts still counts as before it
    moved = dict(inp.first_purchase_ms) | {0: T0 + 20_000}
    inp2 = dataclasses.replace(inp, first_purchase_ms=moved)
    assert head_metrics(inp2, 0, 0.5)["caught_before_purchase"] == pytest.approx(2 / 3)


def test_episode_recall_by_kind() -> None:
    m = head_metrics(_episode_world(), 0, 0.5)
    assert m["episode_recall_by_kind"] == {
        "account_takeover": [0, 1],
        "card_testing": [2, 2],
        "unknown": [1, 1],
    }
    assert head_metrics(_episode_world(), 1, 0.5)["episode_recall_by_kind"] == {}


# --- baseline ------------------------------------------------------------------------------


def _records(events: list[Event]) -> np.ndarray:
    return np.frombuffer(b"".join(encode_event(e, SPEC) for e in events), RECORD_DTYPE)


def _hand_windows() -> list[np.ndarray]:
    w1 = [
        Event("e1", "u", T0, "login", device_id="d1", ip="1.2.3.4"),
        Event("e2", "u", T0 + 300, "click", device_id="d1", item_id="i1"),
        Event("e3", "u", T0 + 2300, "click", device_id="d2", item_id="i2"),
        Event("e4", "u", T0 + 3_602_300, "purchase", amount=20.0, payment_method="p", order_id="o"),
    ]
    w2 = [
        Event("f1", "v", T0, "page_view", price=12.0),
        Event("f2", "v", T0 + 20_000, "search", query="shoes"),
    ]
    return [_records(w1), _records(w2)]


def test_window_aggregates_hand_made() -> None:
    x = windows_to_inputs(_hand_windows(), SPEC)
    agg = window_aggregates(x.features, x.attention_mask)
    assert agg.shape == (2, len(AGGREGATE_NAMES))
    assert agg.dtype == np.float32
    a = [dict(zip(AGGREGATE_NAMES, row.tolist(), strict=True)) for row in agg]
    assert a[0]["length"] == 4
    assert a[1]["length"] == 2
    assert a[0]["count_click"] == 2
    assert a[0]["count_purchase"] == 1
    assert a[0]["count_login"] == 1
    assert a[0]["share_click"] == 0.5
    assert (a[1]["count_page_view"], a[1]["count_search"]) == (1, 1)
    # gaps: 300 ms, 2 s, 1 h in window 1; 20 s in window 2
    bands = ("subsecond", "1s_10s", "10s_5min", "over_5min")
    assert [a[0][f"gap_count_{b}"] for b in bands] == [1, 1, 0, 1]
    assert [a[1][f"gap_count_{b}"] for b in bands] == [0, 0, 1, 0]
    assert a[1]["gap_std"] == 0
    assert a[1]["gap_mean"] == a[1]["gap_min"] == a[1]["last_gap"]
    assert not np.isnan(a[0]["gap_std"])
    assert a[0]["gap_min"] < a[0]["gap_max"]
    assert a[0]["distinct_device"] == 2
    assert a[0]["new_device"] == 1
    assert a[0]["distinct_item"] == 2
    assert a[0]["distinct_payment"] == 1
    assert a[0]["amount_max"] == 1 + SPEC.amount_edges.index(20) + 1  # bucket of 20
    assert a[1]["price_max"] == 1 + SPEC.price_edges.index(10) + 1  # 12 lies in [10, 15)
    assert np.isnan(a[1]["amount_max"])  # no amount at all: missing, not 0
    assert a[0]["last_type"] == SPEC.event_types.index("purchase")
    assert a[0]["last_payment_novelty"] == 3  # new in the window
    assert a[0]["flag_share_order_id"] == 0.25
    assert a[1]["flag_share_query"] == 0.5
    assert a[0]["last_hour"] == 1
    assert a[0]["events_last_1m"] == 1


def test_window_aggregates_ignore_padding() -> None:
    windows = _hand_windows()
    x = windows_to_inputs(windows, SPEC)
    alone = windows_to_inputs(windows[1:], SPEC, pad_to=12)
    batch = window_aggregates(x.features, x.attention_mask)
    single = window_aggregates(alone.features, alone.attention_mask)
    np.testing.assert_array_equal(batch[1], single[0])


@pytest.fixture
def one_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads crawl on a busy small machine: use one."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.mark.usefixtures("one_thread")
def test_fit_baseline_learns_separable_problem() -> None:
    rng = np.random.default_rng(5)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(size=(n, 6))  # noqa: N806
        y = np.stack([X[:, 0] > 1.2, X[:, 1] + X[:, 2] > 2.0], axis=1).astype(float)
        return X, y

    X, y = make(3000)  # noqa: N806
    Xv, yv = make(1000)  # noqa: N806
    Xt, yt = make(2000)  # noqa: N806
    weight = np.where(y.any(axis=1), 1.0, 2.0)  # as if half the negatives were dropped
    model = fit_baseline(X, y, weight, seed=0, X_val=Xv, y_val=yv, max_iter=150)
    assert len(model.models) == 2
    p = model.predict(Xt)
    assert p.shape == (2000, 2)
    inp = _inp(p, yt)
    for head in range(2):
        assert head_metrics(inp, head, 0.5)["pr_auc"] > 0.95


@pytest.mark.usefixtures("one_thread")
def test_baseline_on_window_aggregates() -> None:
    """End to end on real windows: bots click every 100 ms, people browse and buy."""
    rng = np.random.default_rng(6)
    windows, labels = [], []
    for i in range(300):
        bot = i % 3 == 0
        t, evs = T0 + int(rng.integers(0, DAY)), []
        for k in range(int(rng.integers(3, 12))):
            t += int(rng.integers(80, 150)) if bot else int(rng.integers(2_000, 90_000))
            kind = "click" if bot else str(rng.choice(["page_view", "search", "click", "purchase"]))
            evs.append(Event(f"{i}-{k}", f"u{i}", t, kind, device_id=f"d{i}"))
        windows.append(_records(evs))
        labels.append([0.0, float(bot)])
    x = windows_to_inputs(windows, SPEC)
    agg = window_aggregates(x.features, x.attention_mask)
    y = np.array(labels)
    model = fit_baseline(agg[:200], y[:200], np.ones(200), seed=1)
    p = model.predict(agg[200:])
    assert np.all(p[:, 0] == 0.0)  # one-class head: a constant scorer
    assert head_metrics(_inp(p, y[200:]), 1, 0.5)["pr_auc"] > 0.95


# --- report --------------------------------------------------------------------------------


def test_write_report(tmp_path: Path) -> None:
    inp = _random_inp(2000, 0.1, seed=7)
    rng = np.random.default_rng(8)
    good = np.clip(inp.y * 0.5 + rng.random(inp.y.shape) * 0.6, 0, 1)
    model = dataclasses.replace(inp, scores=np.stack([good[:, 0], inp.scores[:, 1]], 1))
    base = dataclasses.replace(inp, scores=np.stack([inp.scores[:, 0], good[:, 1]], 1))
    thresholds = {h: 0.5 for h in LABELS}
    report = {
        "heads": evaluate(model, thresholds),
        "baseline": evaluate(base, thresholds),
        "split": {"train_users": 100, "test": {"events": 2000}},
        "data": {"positive_rate": 0.1},
        "training": {"epochs": 3},
        "thresholds": {
            "transfer": "refit",
            "promise": {
                "fraud": {
                    "normal_users_alerted_per_1000_per_day": 4.92,
                    "interval_90": [2.68, 7.61],
                    "measured_on": "the reference set",
                }
            },
        },
    }
    json.dumps(report, allow_nan=False)
    curves = {
        h: {"model": pr_curve(model, i), "baseline": pr_curve(base, i)}
        for i, h in enumerate(LABELS)
    }
    paths = write_report(report, tmp_path, curves)
    assert paths == [tmp_path / "report.md", tmp_path / "pr_curves.png"]
    md = paths[0].read_text()
    assert "## fraud" in md
    assert "## abnormal_click" in md
    assert "fraud: model PR-AUC" in md
    assert "model better by" in md
    assert "abnormal_click: model PR-AUC" in md
    assert "the model does NOT beat the baseline" in md
    assert "classification report" in md
    assert "| pr_auc |" in md
    assert "test.events" in md
    assert "## Training" in md
    # the promise, with how sure it is
    assert "- fraud: 4.92 normal users alerted per 1,000 per day (90 %: 2.68–7.61)" in md
    png = paths[1].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    assert not (tmp_path / "report.json").exists()


def test_verdict_calls_a_difference_below_the_tie_margin_a_tie() -> None:
    from training.report import TIE_PR_AUC, verdict

    tie = verdict("abnormal_click", {"pr_auc": 0.99997}, {"pr_auc": 0.99996})
    assert "a tie" in tie
    assert "does NOT beat" in tie
    assert "0.99997" in tie
    assert "0.99996" in tie
    ahead = verdict("fraud", {"pr_auc": 0.99}, {"pr_auc": 0.99 - 2 * TIE_PR_AUC})
    assert "model better by 0.0010" in ahead
    behind = verdict("fraud", {"pr_auc": 0.95}, {"pr_auc": 0.97})
    assert "behind by 0.0200" in behind
