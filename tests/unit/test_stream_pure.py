"""Pure parts of the worker: rules parsing and evaluation, window facts, settings, the CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest

from events import RECORD_DTYPE, EncodingSpec, Event, encode_event
from riskstream.cli import main
from stream import RulesError, WorkerSettings, parse_rules
from stream.explain import RecentEventIds, window_facts, window_summary

SPEC = EncodingSpec()
T0 = 1_793_577_600_000


def _window(*events: tuple[str, int, dict[str, object]]) -> np.ndarray:
    recs = [
        encode_event(Event(f"e{i}", "u", T0 + at, etype, **extra), SPEC)  # type: ignore[arg-type]
        for i, (etype, at, extra) in enumerate(events)
    ]
    return np.frombuffer(b"".join(recs), RECORD_DTYPE)


RULES = """
rules:
  - id: burst
    alert: fraud
    all:
      - {types: [payment_failed], at_least: 3, within_s: 60}
  - id: devices
    alert: fraud
    severity: critical
    all:
      - {distinct: device, at_least: 2}
"""


def test_rules_count_within_the_time_bound() -> None:
    rules = parse_rules(RULES, SPEC)
    fails = [("payment_failed", 1000 * i, {}) for i in range(3)]
    assert [r.rule_id for r in rules.firing(_window(*fails))] == ["burst"]
    spread = [("payment_failed", 40_000 * i, {}) for i in range(3)]  # over 80 s
    assert rules.firing(_window(*spread)) == []
    two = _window(("login", 0, {"device_id": "a"}), ("login", 1, {"device_id": "b"}))
    fired = rules.firing(two)
    assert [(r.rule_id, r.severity) for r in fired] == [("devices", "critical")]
    assert "distinct device ≥ 2" in fired[0].describe()
    assert rules.version.startswith("rules-")
    assert parse_rules(RULES + "\n", SPEC).version != rules.version


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("rules: [oops", "not valid YAML"),
        ("rules: 3", "'rules' list"),
        ("rules:\n  - {alert: fraud, all: [{types: [click], at_least: 1}]}", "rules[0].id"),
        ("rules:\n  - {id: a, alert: spam, all: [{types: [click], at_least: 1}]}", "rule a.alert"),
        ("rules:\n  - {id: a, alert: fraud, all: [{types: [clack], at_least: 1}]}", "clack"),
        ("rules:\n  - {id: a, alert: fraud, all: [{types: [click]}]}", "at_least or at_most"),
        ("rules:\n  - {id: a, alert: fraud, all: [{types: [click], at_least: -1}]}", "at_least"),
        ("rules:\n  - {id: a, alert: fraud, all: [{distinct: shoe, at_least: 1}]}", "distinct"),
        ("rules:\n  - {id: a, alert: fraud, all: [{at_least: 1, when: x}]}", "all[0].when"),
        ("rules:\n  - {id: a, alert: fraud, severity: dire, all: [{at_least: 1}]}", "severity"),
        ("rules:\n  - {id: a, alert: fraud, all: []}", "rule a.all"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule_and_key(text: str, names: str) -> None:
    with pytest.raises(RulesError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_rules(text, SPEC, "rules.yaml")


def test_window_facts_name_what_stands_out() -> None:
    fails = [("payment_failed", i, {"device_id": "d2", "country": "FR"}) for i in (1, 2)]
    clicks = [("click", 10 + 2000 * i, {"device_id": "d1", "country": "DE"}) for i in range(25)]
    window = _window(*fails, *clicks)
    codes = {r.code for r in window_facts(window, SPEC)}
    assert {"payment_failures", "clicks_without_purchase", "regular_gaps"} <= codes
    summary = window_summary(window, SPEC)
    assert summary.events == 27
    assert summary.type_counts == {"click": 25, "payment_failed": 2}
    assert (summary.distinct_devices, summary.distinct_countries) == (2, 2)
    human = _window(*[("click", 1000 * i * i, {}) for i in range(12)])
    assert "regular_gaps" not in {r.code for r in window_facts(human, SPEC)}


def test_recent_event_ids_are_bounded() -> None:
    names = RecentEventIds(capacity=2)
    recs = [encode_event(Event(f"id{i}", "u", T0, "click"), SPEC) for i in range(3)]
    for i, rec in enumerate(recs):
        names.add(rec, f"id{i}")
    eid = int.from_bytes(recs[0][6:12], "little")
    assert names.name(eid) == f"#{eid:012x}"  # forgotten: the oldest of three
    assert names.name(int.from_bytes(recs[2][6:12], "little")) == "id2"


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_BATCH_MAX", "512")
    monkeypatch.setenv("RISKSTREAM_REDIS_URL", "redis://:secret@h:6379/0")
    settings = WorkerSettings()
    assert settings.batch_max == 512
    assert "secret" not in repr(settings)
    monkeypatch.setenv("RISKSTREAM_REDIS_PREFIX", "a{b}")
    with pytest.raises(ValueError, match="redis_prefix"):
        WorkerSettings()


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["worker", "--bundle", "/nonexistent"], "--bundle /nonexistent: no manifest.json"),
        (["worker", "--batch-max", "0"], "RISKSTREAM_BATCH_MAX"),
    ],
)
def test_worker_cli_errors_are_one_line(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("RISKSTREAM_BATCH_MAX", "RISKSTREAM_BUNDLE"):
        monkeypatch.delenv(key, raising=False)
    saved = dict(os.environ)
    try:
        assert main(argv) == 1
    finally:  # the command turns its flags into RISKSTREAM_* variables of this process
        os.environ.clear()
        os.environ.update(saved)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:")
    assert names in err
    assert len(err.splitlines()) == 1
