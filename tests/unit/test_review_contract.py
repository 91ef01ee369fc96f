"""The review edge without services: alert validation agrees with alert.json, decisions round-trip
and agree with decision.json, passwords are hashed (never stored or taken as plain text), the
decisions become feedback lines the trainer reads, and decisions known after the cut are left
out of training."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest

from events import (
    Decision,
    InvalidAlert,
    InvalidDecision,
    WindowPolicy,
    decision_to_dict,
    dumps_decision,
    load_schema,
    parse_alert,
    parse_decision,
    parse_ts_ms,
)
from riskstream.review.auth import UserStore, hash_password, set_user, verify_password
from riskstream.review.exceptions import AuthError
from riskstream.review.labels import feedback_lines, write_feedback
from riskstream.review.migrate import available_migrations
from tests.integration.review_support import make_alert
from training.data import load_corpus
from training.examples import build_examples, cut_time
from training.exceptions import DataError

CHECKER = jsonschema.FormatChecker()
ALERT_SCHEMA = jsonschema.Draft202012Validator(load_schema("alert"), format_checker=CHECKER)
DECISION_SCHEMA = jsonschema.Draft202012Validator(load_schema("decision"), format_checker=CHECKER)


def _mutations(alert: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in list(alert):
        gone = copy.deepcopy(alert)
        del gone[key]
        out.append(gone)
    for key, bad in [
        ("score", 1.5), ("score", "0.9"), ("score", True), ("threshold", -0.1),
        ("type", "spam"), ("severity", "urgent"), ("event_ts", "yesterday"),
        ("detected_at", 1793644415000), ("alert_id", ""), ("user_id", 7), ("extra", 1),
        ("window", []), ("reasons", {}), ("reasons", [{"code": "x"}]),
        ("reasons", [{"code": "x", "detail": "y", "event_ids": [1]}]),
        ("reasons", [{"code": "x", "detail": "y", "other": 1}]),
    ]:  # fmt: skip
        changed = copy.deepcopy(alert)
        changed[key] = bad
        out.append(changed)
    for key, bad in [("events", 0), ("span_s", -1), ("type_counts", {"a": -1}),
                     ("distinct_ips", 1.5), ("more", 1)]:  # fmt: skip
        changed = copy.deepcopy(alert)
        changed["window"][key] = bad
        out.append(changed)
    return out


def test_parse_alert_accepts_exactly_what_the_schema_accepts() -> None:
    good = make_alert("u-1", rule_id="card_testing")
    assert ALERT_SCHEMA.is_valid(good)
    alert = parse_alert(orjson.dumps(good))
    assert alert.user_id == "u-1"
    assert alert.reasons[0].rule_id == "card_testing"
    assert alert.reasons[-1].event_ids == ("e-7", "e-3")
    for bad in _mutations(good):
        valid = ALERT_SCHEMA.is_valid(bad)
        error: InvalidAlert | None = None
        try:
            parse_alert(orjson.dumps(bad))
        except InvalidAlert as exc:
            error = exc
        assert (error is None) == valid, bad
        assert error is None or error.field


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"", b"x" * 300_000])
def test_parse_alert_refuses_non_objects_with_the_message_field(raw: bytes) -> None:
    with pytest.raises(InvalidAlert) as info:
        parse_alert(raw)
    assert info.value.field == "message"


def _decision(**changes: Any) -> Decision:
    base: dict[str, Any] = {
        "decision_id": "4a1b", "case_id": "12", "alert_ids": ("a1", "a2"),
        "alert_types": ("fraud",), "user_id": "u1", "verdict": "confirmed_fraud",
        "window_start_ms": parse_ts_ms("2026-11-02T10:00:00Z"),
        "window_end_ms": parse_ts_ms("2026-11-02T10:05:00Z"), "analyst": "alice",
        "decided_at_ms": parse_ts_ms("2026-11-02T12:00:00Z"), "note": "<b>checked</b>",
        "model_versions": ("v1",),
    }  # fmt: skip
    return Decision(**{**base, **changes})


def test_decisions_round_trip_and_match_the_schema() -> None:
    for verdict in ("confirmed_fraud", "confirmed_abnormal_click", "false_positive", "escalated"):
        d = _decision(verdict=verdict)
        wire = decision_to_dict(d)
        DECISION_SCHEMA.validate(wire)
        assert parse_decision(dumps_decision(d)) == d
    assert _decision().label == "fraud"
    assert _decision(verdict="confirmed_abnormal_click").label == "abnormal_click"
    assert _decision(verdict="false_positive").label is None
    wire = decision_to_dict(_decision())
    for key, bad in [("verdict", "maybe"), ("alert_ids", []), ("alert_types", ["spam"]),
                     ("decided_at", "soon"), ("note", "x" * 4001),
                     ("window_end", "2026-11-02T09:00:00Z"), ("extra", 1)]:  # fmt: skip
        changed = {**wire, key: bad}
        with pytest.raises(InvalidDecision):
            parse_decision(orjson.dumps(changed))
        if key != "window_end":  # an order between two fields: beyond JSON Schema
            assert not DECISION_SCHEMA.is_valid(changed)


def test_passwords_are_scrypt_hashes_and_the_users_file_holds_no_plain_text(tmp_path: Path) -> None:
    stored = hash_password("s3cret-pass", n=2**10)
    assert stored.startswith("scrypt$1024$")
    assert "s3cret-pass" not in stored
    assert verify_password("s3cret-pass", stored)
    assert not verify_password("s3cret-pasS", stored)
    assert hash_password("s3cret-pass", n=2**10) != stored  # salted
    users = tmp_path / "users"
    assert set_user(users, "alice", "correct-horse") is True
    assert set_user(users, "alice", "another-horse") is False
    assert "horse" not in users.read_text()
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    store = UserStore(users)
    assert store.check("alice", "another-horse")
    assert not store.check("alice", "correct-horse")
    assert not store.check("bob", "another-horse")
    with pytest.raises(AuthError):
        set_user(users, "alice", "short")
    with pytest.raises(AuthError):
        set_user(users, "<script>", "long-enough")
    users.write_text("alice:plaintext\n")
    with pytest.raises(AuthError, match="hashed password"):
        UserStore(users).users()


def test_add_user_reads_the_password_from_stdin_not_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riskstream.cli import main

    users = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-pw\n"))
    assert main(["review", "add-user", "carol", "--users-file", str(users)]) == 0
    assert UserStore(users).check("carol", "from-stdin-pw")
    assert main(["review", "add-user", "carol", "from-argv", "--users-file", str(users)]) == 2


def test_migrations_are_numbered_sql_files() -> None:
    found = available_migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert "CREATE TABLE cases" in found[0].sql


# --- decisions become labels ---------------------------------------------------------------------

T0 = parse_ts_ms("2026-11-02T00:00:00Z")
MIN = 60_000


def _world(tmp_path: Path) -> Path:
    """Two users with an event a minute for 10 hours."""
    lines = [
        orjson.dumps({"event_id": f"{u}-{i}", "user_id": u, "ts": T0 + i * MIN, "type": "click"})
        for u in ("u1", "u2")
        for i in range(600)
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    return events


def test_decisions_become_feedback_episodes_known_from_their_time(tmp_path: Path) -> None:
    events = _world(tmp_path)
    early, late = T0 + 200 * MIN, T0 + 400 * MIN  # the cut (median) is at minute 299
    decisions = [
        _decision(decision_id="d1", user_id="u1", window_start_ms=T0 + 10 * MIN,
                  window_end_ms=T0 + 20 * MIN, decided_at_ms=early),
        _decision(decision_id="d2", user_id="u2", verdict="false_positive",
                  alert_types=("fraud", "abnormal_click"), window_start_ms=T0 + 30 * MIN,
                  window_end_ms=T0 + 40 * MIN, decided_at_ms=early),
        _decision(decision_id="d3", user_id="u2", verdict="confirmed_abnormal_click",
                  window_start_ms=T0 + 50 * MIN, window_end_ms=T0 + 60 * MIN, decided_at_ms=late),
        _decision(decision_id="d4", user_id="u1", verdict="escalated", decided_at_ms=early),
    ]  # fmt: skip
    feedback = tmp_path / "feedback.jsonl"
    counts = write_feedback(decisions, feedback)
    assert counts == {"positive": 2, "negative": 2, "skipped": 1}
    lines = [orjson.loads(x) for x in feedback.read_bytes().splitlines()]
    assert [x["decision_id"] for x in lines] == ["d1", "d2", "d2", "d3"]  # by decided_at
    assert feedback_lines(decisions[3]) == []

    corpus = load_corpus(events, None, feedback, progress=False)
    assert [(e.user_id, e.label, e.source) for e in corpus.episodes] == [
        ("u1", "fraud", "review"),
        ("u2", "abnormal_click", "review"),
    ]
    assert sorted(corpus.known_ms.values()) == [early, late]
    assert {(n.user_id, n.label) for n in corpus.negatives} == {
        ("u2", "fraud"),
        ("u2", "abnormal_click"),
    }
    cut = cut_time(corpus, 0.5)
    assert early < cut < late
    before = corpus.known_before(cut)
    assert [e.user_id for e in before.episodes] == ["u1"]  # d3 became known after the cut
    assert len(before.negatives) == 2
    assert corpus.known_before(T0).episodes == []
    assert corpus.known_before(T0).negatives == []

    # Known negatives: never subsampled away, weighted as configured.
    users = np.arange(len(before.users), dtype=np.int32)
    policy = WindowPolicy(max_events=16, max_age_s=3600)
    plain = build_examples(before, users, policy, t_to_ms=cut, neg_keep=0.1, seed=1)
    judged = build_examples(
        before, users, policy, t_to_ms=cut, neg_keep=0.1, seed=1, known_negative_weight=7.0
    )
    u2 = before.user_index()["u2"]
    in_span = (judged.user_index == u2) & (judged.ts_ms >= T0 + 30 * MIN)
    in_span &= judged.ts_ms <= T0 + 40 * MIN
    assert in_span.sum() == 11  # every event of the dismissed span, kept
    assert set(judged.weight[in_span].tolist()) == {7.0}
    plain_span = (plain.user_index == u2) & (plain.ts_ms >= T0 + 30 * MIN)
    plain_span &= plain.ts_ms <= T0 + 40 * MIN
    assert plain_span.sum() < 11
    assert judged.positives().tolist() == plain.positives().tolist() == [11, 0]


def test_a_bad_decision_line_names_file_and_line(tmp_path: Path) -> None:
    events = _world(tmp_path)
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_bytes(
        b'{"kind": "review_confirmed", "user_id": "u1", "label": "fraud", '
        b'"start": "2026-11-02T00:00:00Z", "end": "2026-11-02T00:10:00Z", "ts": "soon"}\n'
    )
    with pytest.raises(DataError, match=r"feedback.jsonl:1: ts"):
        load_corpus(events, None, feedback, progress=False)
