"""Changes of the allow / deny lists files (`stream.lists`), each audited in PostgreSQL.

`change_list` writes the audit row (who, when, why, what; `migrations/0002_list_changes.sql`)
and edits the file in one transaction: the row is committed only once the file is written, and a
change the file refuses (a bad CIDR, say) leaves neither. The worker re-reads the file within a
batch of the change (`stream.rules.RulesFile`). Used by `riskstream lists` and by the console's
list action on a case.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from riskstream.review.exceptions import ReviewError
from stream.exceptions import RulesError
from stream.lists import NEVER_MS, Entry, edit_lists

__all__ = ["SOURCES", "change_list", "list_history"]

SOURCES: Final = ("cli", "console")


def _expires(ms: int) -> datetime | None:
    return None if ms == NEVER_MS else datetime.fromtimestamp(ms / 1000, tz=UTC)


async def change_list(
    conn: AsyncConnection[Any],
    path: Path,
    operation: Literal["add", "remove"],
    entry: Entry,
    *,
    actor: str,
    source: Literal["cli", "console"],
    case_id: int | None = None,
    decision_id: str | None = None,
) -> int:
    """Add `entry` to the lists file at `path`, or remove every line of its action, kind and
    value (`entry.reason` is then why), and audit it; the lines removed (0 for an add).
    `ReviewError` for a change the file refuses, or a removal that finds nothing."""
    if not actor:
        raise ReviewError("who: a change of a list needs the person making it")
    if not entry.reason.strip():
        raise ReviewError("why: a change of a list needs a reason")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO list_changes (actor, operation, action, kind, value, alert_type,"
            " expires_at, reason, list_file, source, case_id, decision_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                actor, operation, entry.action, entry.kind, entry.value,
                entry.alert_type if entry.action == "deny" else None,
                _expires(entry.expires_ms) if operation == "add" else None,
                entry.reason, str(path), source, case_id, decision_id,
            ),
        )  # fmt: skip
        try:
            if operation == "add":
                removed = await asyncio.to_thread(edit_lists, path, [entry])
            else:
                removed = await asyncio.to_thread(
                    edit_lists, path, (), [(entry.action, entry.kind, entry.value)]
                )
                if not removed:
                    raise ReviewError(
                        f"{path}: no {entry.action} entry for {entry.kind} {entry.value}"
                    )
        except (RulesError, OSError) as exc:
            raise ReviewError(f"the list change was refused: {exc}") from None
    return removed


async def list_history(
    conn: AsyncConnection[Any], kind: str | None = None, value: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The latest audited changes (of one kind and value, where given), newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM list_changes WHERE (%s::text IS NULL OR kind = %s)"
            " AND (%s::text IS NULL OR value = %s) ORDER BY changed_at DESC, change_id DESC"
            " LIMIT %s",
            (kind, kind, value, value, limit),
        )
        return await cur.fetchall()
