"""Allow / deny lists (stream/lists.py) and segment thresholds (stream/rules.py): parsing, good
and bad entries with the file and line named, CIDR and expiry, the segment a threshold comes
from, and the processor's choice of candidates with both."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from events import RECORD_DTYPE, EncodingSpec, Event, parse_event
from events.calibration import HeadCalibration
from stream.exceptions import RulesError
from stream.lists import NEVER_MS, Entry, edit_lists, parse_entry, parse_expiry, parse_lists
from stream.processor import Outcome, Processor
from stream.rules import RulesFile, channel, parse_rules

SPEC = EncodingSpec()
NOW = parse_expiry("2026-12-06T12:00:00Z")
LISTS = b"""# action kind value expires reason
deny    user     u-bad        2027-01-01            chargeback ring, case 12
allow   user     u-good       never                 VIP customer
allow   device   d-qa         never                 QA device
deny    payment  pm-stolen    2026-12-31T00:00:00Z  stolen card
deny    ip       203.0.113.0/24 never               hosting range
deny:abnormal_click ip 2001:db8::/32 never          scraper network
deny    ip       198.51.100.7 never                 single address
deny    user     u-old        2026-12-01            expired long ago

deny    user     u-bad        2026-01-01            an older, shorter entry of the same user
"""


def _event(user: str = "u-1", **extra: object) -> Event:
    fields = {"event_id": f"e-{user}", "user_id": user, "ts": NOW, "type": "click", **extra}
    import orjson

    return parse_event(orjson.dumps(fields), now_ms=NOW)


def test_entries_parse_and_normalise() -> None:
    e = parse_entry("deny:abnormal_click ip 10.1.0.0/16 2027-01-01 bots  from  here", 7)
    assert e == Entry("deny", "ip", "10.1.0.0/16", parse_expiry("2027-01-01"),
                      "bots  from  here", "abnormal_click", 7)  # fmt: skip
    assert parse_entry("   # a comment") is None
    assert parse_entry("") is None
    ip6 = parse_entry("allow ip 2001:DB8:0::/48 never x")
    assert ip6 is not None
    assert ip6.value == "2001:db8::/48"
    assert parse_entry(e.text()) == Entry(*[getattr(e, f) for f in ("action", "kind", "value",
        "expires_ms", "reason", "alert_type")])  # fmt: skip


def test_expiry_forms() -> None:
    assert parse_expiry("2027-01-01") == 1798761600000
    assert parse_expiry("2027-01-01T01:00:00+01:00") == 1798761600000
    assert parse_expiry("never") == NEVER_MS
    for bad in ("2027-13-01", "tomorrow", "2027-01-01T00:00:00", "1798761600000x"):
        with pytest.raises(ValueError, match="expiry"):
            parse_expiry(bad)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("deny ip 10.0.0.1/8 never x", "invalid CIDR '10.0.0.1/8'"),
        ("deny ip 300.1.2.3 never x", "invalid CIDR"),
        ("deny email a@b never x", "kind 'email'"),
        ("block user u1 never x", "action 'block'"),
        ("deny:chargeback user u1 never x", "deny:<type>"),
        ("allow:fraud user u1 never x", "deny:<type>"),
        ("deny user u1 someday x", "expiry 'someday'"),
        ("deny user u1 never", "needs 5 fields"),
    ],
)
def test_a_bad_entry_names_the_file_line_and_reason(line: str, reason: str) -> None:
    text = b"deny user ok never fine\n# comment\n" + line.encode() + b"\n"
    with pytest.raises(RulesError) as caught:
        parse_lists([("conf/lists.txt", text)])
    assert str(caught.value).startswith("conf/lists.txt:3: ")
    assert reason in str(caught.value)


def test_lookup_users_devices_payments_and_prefixes() -> None:
    lists = parse_lists([("l.txt", LISTS)])
    assert lists.entries == 9
    events = [
        _event("u-bad"),
        _event("u-good", device_id="d-x"),
        _event("u-2", device_id="d-qa"),
        _event("u-3", payment_method="pm-stolen"),
        _event("u-4", ip="203.0.113.77"),
        _event("u-5", ip="2001:db8:1::5"),
        _event("u-6", ip="198.51.100.7"),
        _event("u-7", ip="198.51.100.8"),
        _event("u-old"),
        _event("u-8", ip="not an address"),
    ]
    hits = lists.lookup(events, NOW)
    deny = [d and (d.kind, d.line, d.alert_type) for d, _ in hits]
    allow = [a and (a.kind, a.line) for _, a in hits]
    assert deny == [("user", 2, "fraud"), None, None, ("payment", 5, "fraud"),
                    ("ip", 6, "fraud"), ("ip", 7, "abnormal_click"), ("ip", 8, "fraud"),
                    None, None, None]  # fmt: skip
    assert allow == [None, ("user", 3), ("device", 4), None, None, None, None, None, None, None]
    # the later of two entries of one user holds; an expired one does not
    assert hits[0][0] is not None
    assert hits[0][0].reason == "chargeback ring, case 12"
    described = hits[4][0].describe() if hits[4][0] else ""
    assert "IP 203.0.113.77 (in 203.0.113.0/24) is on the deny list (l.txt:6" in described
    # expiry is checked against the time given: after 2026-12-31 the stolen card is off
    later = lists.lookup([events[3]], parse_expiry("2026-12-31"))
    assert later == [(None, None)]
    assert lists.lookup([_event("u-old")], parse_expiry("2026-11-30"))[0][0] is not None


def test_edit_adds_and_removes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "lists.txt"
    path.write_bytes(LISTS)
    entry = Entry("deny", "device", "d-evil", NEVER_MS, "bot farm (case 3)")
    assert edit_lists(path, add=[entry]) == 0
    assert parse_lists([("p", path.read_bytes())]).entries == 10
    assert edit_lists(path, remove=[("deny", "user", "u-bad")]) == 2
    text = path.read_text()
    assert "u-bad" not in text
    assert "d-evil" in text
    assert text.startswith("# action")
    before = path.read_bytes()
    with pytest.raises(RulesError, match="invalid CIDR"):
        edit_lists(path, add=[Entry("deny", "ip", "10.0.0.1/8", NEVER_MS, "x")])
    assert path.read_bytes() == before  # nothing written
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".lists.txt.")]


SEGMENTS = """
segments:
  - id: br_new_payment
    when:
      country: [BR, AR]
      new_payment_method: true
    thresholds: {fraud: 0.3}
  - id: mobile
    when: {channel: mobile}
    thresholds: {fraud: 0.9, abnormal_click: 0.2}
  - id: big_amounts
    when: {amount: {at_least: 500}, ip: [10.0.0.0/8]}
    thresholds: {abnormal_click: 0.95}
"""


def _window(payments: list[int]) -> np.ndarray:
    rec = np.zeros(len(payments), dtype=RECORD_DTYPE)
    rec["payment"] = payments
    rec["ts_s"] = 1_790_000_000 + np.arange(len(payments))
    return rec


def test_segment_threshold_choice() -> None:
    rs = parse_rules(SEGMENTS, SPEC, "r.yaml")
    assert [s.line for s in rs.segments] == [3, 8, 11]
    events = [
        _event("a", country="BR", payment_method="p1"),
        _event("b", country="BR", payment_method="p1"),
        _event("c", country="BR", user_agent="Mozilla/5.0 (iPhone)", payment_method="p1"),
        _event("d", amount=900.0, ip="10.3.4.5"),
        _event("e", amount=900.0, ip="11.3.4.5"),
    ]
    windows = [_window([7, 9]), _window([9, 9]), _window([5, 9]), _window([0]), _window([0])]
    thr, chosen = rs.thresholds(events, windows, {"fraud": 0.8, "abnormal_click": 0.7})
    names = [[s.segment_id if s else None for s in row] for row in chosen]
    assert names == [
        ["br_new_payment", None],  # new payment method in BR: fraud 0.3, click the bundle's
        [None, None],  # BR, but the payment method was seen before
        ["br_new_payment", "mobile"],  # first match per head: fraud from the first segment
        [None, "big_amounts"],
        [None, None],  # the address is outside the segment's prefix
    ]
    assert thr.tolist() == [[0.3, 0.7], [0.8, 0.7], [0.3, 0.2], [0.8, 0.95], [0.8, 0.7]]
    assert channel("Googlebot/2.1") == "bot"


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        (
            "segments:\n  - id: s\n    when: {colour: red}\n    thresholds: {fraud: 0.5}\n",
            "r.yaml:2: segments[0] (s).when.colour: unknown field",
        ),
        (
            "segments:\n  - id: ok\n    when: {country: BR}\n    thresholds: {fraud: 0.5}\n"
            "  - id: s\n    when: {ip: [10.0.0.1/8]}\n    thresholds: {fraud: 0.5}\n",
            "r.yaml:5: segments[1] (s).when.ip: invalid CIDR '10.0.0.1/8'",
        ),
        (
            "segments:\n  - id: s\n    when: {country: BR}\n    thresholds: {fraud: 1.5}\n",
            "thresholds.fraud: must be a number in (0, 1]",
        ),
        (
            "segments:\n  - id: s\n    when: {country: BR}\n    thresholds: {spam: 0.5}\n",
            "thresholds.spam: unknown head",
        ),
        (
            "segments:\n  - id: s\n    when: {channel: tv}\n    thresholds: {fraud: 0.5}\n",
            "unknown channel 'tv'",
        ),
        (
            "segments:\n  - id: s\n    when: {new_device: maybe}\n    thresholds: {fraud: 0.5}\n",
            "new_device: must be true or false",
        ),
        ("segment: []\n", "unknown key 'segment'"),
        ("lists: 5\n", "lists must be a file name"),
        ("decide: {spam: {block: 0.9}}\n", "r.yaml: decide.spam: unknown head"),
        ("decide: {fraud: {block: 1.5}}\n", "decide.fraud.block: must be a number in [0, 1]"),
        ("decide: {fraud: {stop: 0.5}}\n", "decide.fraud: must be a mapping of review"),
        ("decide: {fraud: {review: 0.9, block: 0.5}}\n", "review 0.9 is above block 0.5"),
    ],
)
def test_bad_segments_are_refused_with_the_line(text: str, wanted: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, SPEC, "r.yaml")
    assert wanted in str(caught.value)


def test_decide_cuts_parse_per_head() -> None:
    rules = parse_rules("decide:\n  fraud: {review: 0.5, block: 0.9}\n", SPEC, "r.yaml")
    assert rules.decide["fraud"].decide(0.95) == "block"
    assert rules.decide["fraud"].decide(0.7) == "review"
    assert rules.decide["fraud"].decide(0.4) == "allow"
    assert "abnormal_click" not in rules.decide


def _processor(tmp_path: Path, lists: bytes, segments: str = "") -> Processor:
    (tmp_path / "lists.txt").write_bytes(lists)
    rules = tmp_path / "rules.yaml"
    rules.write_text(segments + "lists: [lists.txt]\n")
    return Processor(RulesFile(rules, SPEC), cooldowns=None)  # type: ignore[arg-type]


def test_candidates_deny_allow_and_segments(tmp_path: Path) -> None:
    proc = _processor(tmp_path, LISTS, SEGMENTS)
    ruleset = proc.rules.current()
    events = [
        _event("u-bad"),  # deny, low score: an alert of its own
        _event("u-good"),  # allow, high score: suppressed
        _event("u-1", country="BR", payment_method="p1"),  # segment lowers fraud to 0.3
        _event("u-2"),  # 0.5: under the bundle's 0.8, no alert
        _event("u-3", ip="2001:db8::9"),  # deny:abnormal_click by prefix
    ]
    windows = [_window([0]), _window([0]), _window([9]), _window([0]), _window([0])]
    probs = np.array([[0.1, 0.1], [0.99, 0.99], [0.5, 0.1], [0.5, 0.1], [0.1, 0.1]])
    out = Outcome()
    calib = {"fraud": HeadCalibration(critical_from=None, high_from=None, min_events=1)}
    cands = proc._candidates(events, windows, probs, {"fraud": 0.8, "abnormal_click": 0.7},
                             ruleset, calib, out, NOW)  # fmt: skip
    got = [(events[c.index].user_id, c.alert_type, c.source, c.threshold) for c in cands]
    assert got == [
        ("u-bad", "fraud", "deny_list", None),
        ("u-1", "fraud", "model", 0.3),
        ("u-3", "abnormal_click", "deny_list", None),
    ]
    assert cands[0].reasons[0].code == "deny_list"
    assert "chargeback ring" in cands[0].reasons[0].detail
    assert cands[0].versions == (ruleset.lists.version,)
    assert cands[1].reasons[0].code == "segment_threshold"
    assert "segment br_new_payment" in cands[1].reasons[0].detail
    assert cands[1].versions == (ruleset.version,)
    assert out.allow_suppressed == {"fraud": 1, "abnormal_click": 1}


def test_lists_hot_reload_refuses_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = _processor(tmp_path, LISTS)
    rules = proc.rules
    first = rules.current().lists
    assert first.entries == 9
    path = tmp_path / "lists.txt"
    edit_lists(path, add=[Entry("deny", "user", "u-new", NEVER_MS, "new")])
    os.utime(path, ns=(1, 1))  # a new stamp even within the clock's resolution
    second = rules.current().lists
    assert second.entries == 10
    assert second.version != first.version
    assert second.lookup([_event("u-new")], NOW)[0][0] is not None
    path.write_bytes(LISTS + b"deny ip 10.0.0.1/8 never x\n")
    with caplog.at_level(logging.ERROR):
        kept = rules.current().lists
    assert kept is second  # the old lists keep serving
    assert rules.failures == 1
    assert f"{path}:12: invalid CIDR '10.0.0.1/8'" in caplog.text


def test_a_large_lists_file_is_read_beside_the_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import stream.rules

    proc = _processor(tmp_path, LISTS)
    first = proc.rules.current().lists
    monkeypatch.setattr(stream.rules, "BACKGROUND_LOAD_BYTES", 0)  # every file is "large"
    path = tmp_path / "lists.txt"
    edit_lists(path, add=[Entry("deny", "user", "u-new", NEVER_MS, "new")])
    os.utime(path, ns=(2, 2))
    deadline = time.monotonic() + 10
    while proc.rules.current().lists is first:  # the old lists serve meanwhile
        assert time.monotonic() < deadline, "the new lists never arrived"
        time.sleep(0.01)
    assert proc.rules.current().lists.entries == 10


def test_a_bad_rule_names_its_line() -> None:
    text = (
        "rules:\n  - id: ok\n    alert: fraud\n    all: [{at_least: 1}]\n"
        "  - id: bad\n    alert: spam\n"
    )
    with pytest.raises(RulesError, match=r"^r.yaml:5: rule bad.alert: must be one of"):
        parse_rules(text, SPEC, "r.yaml")


def test_backtest_report_has_rows_for_deny_lists_and_segments() -> None:
    from riskstream.tools.backtest import BacktestResult, measure

    def alert(user: str, code: str, detail: str) -> dict[str, object]:
        reasons = [{"code": code, "detail": detail}]
        return {"alert_id": user, "type": "fraud", "user_id": user, "event_id": "e",
                "event_ts": NOW, "reasons": reasons, "score": 0.5}  # fmt: skip

    result = BacktestResult(
        alerts=[
            alert("a", "deny_list", "user a is on the deny list (l.txt:2, never expires): x"),
            alert("b", "segment_threshold", "segment br_new (country in BR): fraud threshold 0.3"),
            alert("c", "payment_failures", "3 failed payments"),
        ],
        sources=["deny_list", "model", "model"],
        users={"a", "b", "c", "d"},
        report={"period": {"start_ms": NOW, "days": 1.0}, "users": 4},
    )
    rows = measure(result, None)
    assert rows["deny_list:fraud"]["alerts"] == 1
    assert rows["segment:br_new"]["alerts"] == 1
    assert rows["model:fraud"]["alerts"] == 2
    assert rows["all:fraud"]["alerts"] == 3
