"""`riskstream lists add|remove|show` against a real PostgreSQL: every change audited (who,
when, why, what), a refused change leaves neither an audit row nor a changed file."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from riskstream.cli import main

pytestmark = [pytest.mark.integration]


def _rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT actor, operation, action, kind, value, alert_type, expires_at IS NULL, reason,"
            " source FROM list_changes ORDER BY change_id"
        ).fetchall()


def test_cli_changes_are_audited_and_bad_ones_refused(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RISKSTREAM_DATABASE_URL", database_url)
    lists = tmp_path / "lists.txt"
    ok = [
        ["lists", "add", "deny:abnormal_click", "ip", "203.0.113.0/24", "--file", str(lists),
         "--reason", "scraper range", "--by", "bob", "--expires", "2099-01-01"],
        ["lists", "add", "allow", "user", "u-vip", "--file", str(lists), "--reason", "VIP",
         "--by", "carol"],
    ]  # fmt: skip
    for argv in ok:
        assert main(argv) == 0
    text = lists.read_text()
    assert "deny:abnormal_click\tip\t203.0.113.0/24\t2099-01-01T00:00:00.000Z" in text
    # refused: a bad CIDR, and a removal of what is not there; nothing audited, file unchanged
    assert main(["lists", "add", "deny", "ip", "10.0.0.1/8", "--file", str(lists),
                 "--reason", "typo", "--by", "bob"]) != 0  # fmt: skip
    assert main(["lists", "remove", "deny", "user", "u-nobody", "--file", str(lists),
                 "--reason", "x", "--by", "bob"]) != 0  # fmt: skip
    assert lists.read_text() == text
    assert main(["lists", "remove", "allow", "user", "u-vip", "--file", str(lists),
                 "--reason", "no longer VIP", "--by", "dave"]) == 0  # fmt: skip
    assert "u-vip" not in lists.read_text()
    assert _rows(database_url) == [
        ("bob", "add", "deny", "ip", "203.0.113.0/24", "abnormal_click", False, "scraper range",
         "cli"),
        ("carol", "add", "allow", "user", "u-vip", None, True, "VIP", "cli"),
        ("dave", "remove", "allow", "user", "u-vip", None, True, "no longer VIP", "cli"),
    ]  # fmt: skip
    from rich.console import Console

    import riskstream.review.cli

    monkeypatch.setattr(riskstream.review.cli, "_out", Console(width=300, highlight=False))
    capsys.readouterr()
    assert main(["lists", "show", "--file", str(lists), "--history", "--value", "u-vip"]) == 0
    shown = capsys.readouterr().out
    assert "1 entries" in shown
    assert "dave" in shown
    assert "no longer VIP" in shown
