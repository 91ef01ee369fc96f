"""The demo's scorecard and picture on a hand-made replay: two episodes, one caught."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from events import format_ts_ms
from riskstream.demo.summary import match_episodes, replayed_users, score_alerts
from riskstream.demo.timeline import write_timeline

T0 = 1_793_620_800_000  # the replayed part starts here


def _files(tmp_path: Path) -> tuple[Path, Path, list[dict[str, str]]]:
    events = tmp_path / "held_out.jsonl"
    rows = [
        {"event_id": f"e{i}", "user_id": user, "ts": format_ts_ms(T0 + i * 60_000), "type": "click"}
        for i, user in enumerate(["bot", "thief", "alice", "bob", "bot", "thief", "alice"] * 20)
    ]
    events.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    labels = tmp_path / "labels.jsonl"
    eps = [
        # started before the replayed part: its clock starts with the replay
        {"user_id": "bot", "label": "abnormal_click", "kind": "click_bot",
         "start": format_ts_ms(T0 - 600_000), "end": format_ts_ms(T0 + 3_600_000)},
        {"user_id": "thief", "label": "fraud", "kind": "card_testing",
         "start": format_ts_ms(T0 + 60_000), "end": format_ts_ms(T0 + 900_000)},
        # over before the replayed part: not counted
        {"user_id": "bob", "label": "fraud", "kind": "card_testing",
         "start": format_ts_ms(T0 - 9_000_000), "end": format_ts_ms(T0 - 8_000_000)},
    ]  # fmt: skip
    labels.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in eps))
    alerts = [
        {"user_id": "bot", "type": "abnormal_click", "event_ts": format_ts_ms(T0 + 240_000)},
        {"user_id": "bot", "type": "abnormal_click", "event_ts": format_ts_ms(T0 + 2_000_000)},
        {"user_id": "thief", "type": "abnormal_click", "event_ts": format_ts_ms(T0 + 120_000)},
        {"user_id": "alice", "type": "abnormal_click", "event_ts": format_ts_ms(T0 + 5_000_000)},
    ]
    return events, labels, alerts


def test_episodes_are_matched_to_the_first_alert_of_their_type(tmp_path: Path) -> None:
    events, labels, alerts = _files(tmp_path)
    outcomes = match_episodes(alerts, replayed_users(events), labels, T0)
    by_user = {o.user_id: o for o in outcomes}
    assert set(by_user) == {"bot", "thief"}
    assert by_user["bot"].time_to_alert_s == pytest.approx(240.0)  # from the replay's start
    assert not by_user["thief"].caught  # its alert was of the other type
    card = score_alerts(alerts, events, labels, T0)
    assert card.caught_by_kind == {"card_testing": (0, 1), "click_bot": (1, 1)}
    assert (card.normal_users, card.normal_users_alerted) == (1, 1)  # alice (bob had an episode)


def test_the_timeline_is_written_for_a_small_summary(tmp_path: Path) -> None:
    events, labels, alerts = _files(tmp_path)
    out = tmp_path / "timeline.png"
    write_timeline(events, alerts, labels, T0, out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def _finished_run(out: Path, seed: int = 7) -> list[dict[str, object]]:
    """What a finished `riskstream demo` leaves: its settings, bundle manifest and alerts."""
    alerts: list[dict[str, object]] = [{"alert_id": "a1", "user_id": "u1"}, {"alert_id": "a2"}]
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "manifest.json").write_text("{}")
    (out / "alerts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
    run = {"users": 2000, "days": 2.0, "seed": seed, "attack_share": 0.02, "quick": False,
           "model_version": "m1", "alerts": 2}  # fmt: skip
    (out / "demo.json").write_bytes(orjson.dumps(run))
    return alerts


def test_demo_review_reuses_a_finished_run_instead_of_training_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from riskstream.command import main
    from riskstream.demo import review_console as review_demo
    from riskstream.demo import run as demo_run
    from riskstream.demo.exceptions import DemoError

    def no_run(*_args: object, **_kwargs: object) -> None:
        raise DemoError("the demo ran again")

    served: list[list[dict[str, object]]] = []
    monkeypatch.setattr(demo_run, "run_demo", no_run)
    monkeypatch.setattr(review_demo, "serve_demo_console",
                        lambda _out, a, shadow_alerts=None: served.append(a))  # fmt: skip
    alerts = _finished_run(tmp_path / "demo")
    assert main(["demo", "--review", "--out", str(tmp_path / "demo")]) == 0
    assert served == [alerts]
    assert "reusing the demo" in capsys.readouterr().out
    # Another world, --rerun, a missing bundle or a run cut short: it runs again.
    for argv in (["--seed", "8"], ["--rerun"]):
        assert main(["demo", "--review", "--out", str(tmp_path / "demo"), *argv]) == 1
        assert "the demo ran again" in capsys.readouterr().err
    (tmp_path / "demo" / "bundle" / "manifest.json").unlink()
    assert demo_run.reusable_alerts(tmp_path / "demo", users=2000, days=2.0, seed=7) is None
    _finished_run(tmp_path / "short")
    (tmp_path / "short" / "alerts.jsonl").write_bytes(b'{"alert_id": "a1"}\n')
    assert demo_run.reusable_alerts(tmp_path / "short", users=2000, days=2.0, seed=7) is None


def test_demo_review_serves_the_runs_shadow_alerts_and_prints_their_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from riskstream.command import main
    from riskstream.demo import review_console as review_demo
    from riskstream.demo import run as demo_run

    out = tmp_path / "demo"
    alerts = _finished_run(out)
    assert demo_run.reusable_shadow_alerts(out) is None  # a run from before the shadow
    live = {"alert_id": "a1", "type": "fraud", "user_id": "u1", "model_version": "m1",
            "detected_at": "2026-12-06T10:00:00Z"}  # fmt: skip
    shadow = [dict(live, alert_id="s1", model_version="m2"),
              dict(live, alert_id="s2", user_id="u2", model_version="m2")]  # fmt: skip
    (out / "shadow_alerts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in shadow))
    run = orjson.loads((out / "demo.json").read_bytes())
    (out / "demo.json").write_bytes(orjson.dumps({**run, "shadow_alerts": 2}))
    assert demo_run.reusable_shadow_alerts(out) == shadow
    served: list[object] = []

    def serve(_out: Path, a: object, shadow_alerts: object = None) -> None:
        served.append((a, shadow_alerts))

    monkeypatch.setattr(review_demo, "serve_demo_console", serve)
    assert main(["demo", "--review", "--out", str(out)]) == 0
    assert served == [(alerts, shadow)]
    assert "its shadow's 2" in capsys.readouterr().out
    # The table `riskstream shadow report` prints: 1 pair both, 1 only in the shadow.
    from rich.console import Console

    demo_run.shadow_summary(Console(width=200), [live], shadow)
    printed = capsys.readouterr().out
    assert "live m1 vs shadow m2" in printed
    assert "50.0%" in printed  # agreement: 1 of 2 pairs
