"""`riskstream shadow report`'s arithmetic (riskstream.tools.shadow): periods, de-duplication,
pairs, agreement and precision where decided; and its one-line refusals of bad arguments."""

from __future__ import annotations

from typing import Any

import pytest

from riskstream.cli import main
from riskstream.tools.exceptions import ToolError
from riskstream.tools.shadow import compare, parse_when, report_table

DAY_MS = 86_400_000
T0 = parse_when("2026-12-01", "--since")


def _alert(aid: str, user: str, head: str = "fraud", at_ms: int = T0 + 3_600_000,
           version: str = "live-1") -> dict[str, Any]:  # fmt: skip
    from events import format_ts_ms

    return {"alert_id": aid, "user_id": user, "type": head, "detected_at": format_ts_ms(at_ms),
            "model_version": version}  # fmt: skip


def _head(report: Any, head: str) -> Any:
    return next(h for h in report.heads if h.head == head)


def test_pairs_agreement_and_counts_per_head() -> None:
    live = [
        _alert("l1", "u1"),  # both alerted u1 for fraud
        _alert("l2", "u2"),  # only live
        _alert("l3", "u3", "abnormal_click"),  # both, abnormal_click
        _alert("l4", "u1", at_ms=T0 + 5 * 3_600_000),  # u1 again (after a cooldown): one pair
    ]
    shadow = [
        _alert("s1", "u1", version="shadow-2"),  # another event of u1: same pair
        _alert("s2", "u4", version="shadow-2"),  # only shadow
        _alert("s3", "u5", version="shadow-2"),  # only shadow
        _alert("s4", "u3", "abnormal_click", version="shadow-2+rules-abc"),
    ]
    r = compare(live, shadow, None, T0)
    fraud, clicks = _head(r, "fraud"), _head(r, "abnormal_click")
    assert (fraud.live_alerts, fraud.shadow_alerts) == (3, 3)
    assert (fraud.both, fraud.only_live, fraud.only_shadow) == (1, 1, 2)
    assert fraud.agreement == pytest.approx(1 / 4)
    assert (clicks.live_alerts, clicks.shadow_alerts, clicks.both) == (1, 1, 1)
    assert clicks.agreement == 1.0
    assert r.live_versions == ["live-1"]
    assert r.shadow_versions == ["shadow-2"]  # the rules' suffix is not a model
    assert fraud.live_precision is None
    assert not r.decisions


def test_the_period_is_half_open_and_a_redelivered_alert_counts_once() -> None:
    live = [
        _alert("a", "u1", at_ms=T0 - 1),  # before
        _alert("b", "u2", at_ms=T0),  # the first instant counts
        _alert("b", "u2", at_ms=T0),  # redelivered: the same alert id
        _alert("c", "u3", at_ms=T0 + DAY_MS),  # at `until`: excluded
        {"alert_id": "d", "type": "fraud"},  # no detected_at
    ]
    r = compare(live, [], None, T0, T0 + DAY_MS)
    fraud = _head(r, "fraud")
    assert (fraud.live_alerts, fraud.only_live, fraud.shadow_alerts) == (1, 1, 0)
    assert r.ignored == {"live_outside": 2, "live_malformed": 1}
    assert _head(r, "abnormal_click").agreement is None  # neither alerted: undefined


def test_precision_rests_on_decided_pairs_and_the_shadow_borrows_live_verdicts() -> None:
    live = [_alert("l1", "u1"), _alert("l2", "u2"), _alert("l3", "u3"), _alert("l4", "u6")]
    # u1 twice: one alert a false positive, the other confirmed: the pair counts confirmed.
    live.append(_alert("l5", "u1", at_ms=T0 + 7_200_000))
    shadow = [_alert("s1", "u1"), _alert("s2", "u2"), _alert("s4", "u4"), _alert("s5", "u5")]
    verdicts = {
        "l1": "false_positive",
        "l5": "confirmed_fraud",
        "l2": "false_positive",
        "l3": "confirmed_abnormal_click",  # counted as confirmed, as the review store does
        # l4: no final verdict yet
        "zz": "confirmed_fraud",  # an alert outside the period / not on the topic: ignored
    }
    r = compare(live, shadow, verdicts, T0)
    fraud = _head(r, "fraud")
    assert (fraud.live_decided, fraud.live_confirmed) == (3, 2)  # u1 ✓, u2 ✗, u3 ✓; u6 open
    assert fraud.live_precision == pytest.approx(2 / 3)
    # The shadow's pairs u1 and u2 were decided on live alerts; u4 and u5 only it raised.
    assert (fraud.shadow_decided, fraud.shadow_confirmed) == (2, 1)
    assert fraud.shadow_precision == pytest.approx(1 / 2)
    data = r.to_json()
    assert data["decisions"] is True
    assert data["heads"][0]["live_precision"] == pytest.approx(2 / 3)
    assert data["heads"][1]["shadow_precision"] is None  # abnormal_click: nothing decided


def test_table_has_a_row_per_head() -> None:
    from rich.console import Console

    r = compare([_alert("l1", "u1")], [_alert("s1", "u1", version="v2")], {}, T0)
    console = Console(width=200, record=True)
    console.print(report_table(r))
    text = console.export_text()
    for cell in ("fraud", "abnormal_click", "100.0%"):
        assert cell in text
    assert "live live-1 vs shadow v2" in text


def test_parse_when() -> None:
    assert parse_when("2026-12-01T00:00:00Z", "--since") == T0
    assert parse_when(str(T0), "--since") == T0
    assert parse_when("7d", "--since", now_ms=T0 + 7 * DAY_MS) == T0
    with pytest.raises(ToolError, match="--until: '2026-13-45'"):
        parse_when("2026-13-45", "--until")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shadow", "report", "--since", "last tuesday"], "error: --since: 'last tuesday'"),
        (
            ["shadow", "report", "--since", "2026-12-02", "--until", "2026-12-01"],
            "error: --until (2026-12-01) must be after --since (2026-12-02)",
        ),
        (["shadow", "report"], "error: Missing option '--since'"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith(message), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
