"""Schema migrations: versioned SQL files (`migrations/NNNN_name.sql`), applied in order at start.

`schema_version` records each applied file (version, name, SHA-256, when). Every pending file runs
in one transaction with its row, under an advisory lock, so two services starting at once apply
each file once. A recorded file whose text changed since is refused: migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import psycopg

from events.redaction import redact
from riskstream.review.exceptions import ReviewError

__all__ = ["Migration", "applied_versions", "available_migrations", "migrate"]

log = logging.getLogger(__name__)

_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY: Final = 0x7265766965770001  # "review" + 1: the advisory lock of this schema


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version (the number in its name), name and text."""

    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The package's migration files, by version.

    >>> [m.version for m in available_migrations()][:1]
    [1]
    """
    found: list[Migration] = []
    for entry in resources.files("riskstream.review").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ReviewError(f"two migration files share a version: {versions}")
    return found


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """{version: sha256} of the applied migrations ({} on an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, sha256 FROM schema_version").fetchall()
    return {int(v): str(h) for v, h in rows}


def migrate(url: str) -> list[int]:
    """Apply the pending migrations to the database at `url`; the versions applied now."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ReviewError(f"cannot reach the database at {redact(url)}: {exc}") from None
    applied_now: list[int] = []
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, sha256 TEXT NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = applied_versions(conn)
            for m in available_migrations():
                if m.version in done:
                    if done[m.version] != m.sha256:
                        raise ReviewError(
                            f"migration {m.version:04d}_{m.name}.sql changed after it was "
                            "applied: add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_version (version, name, sha256) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.sha256),
                    )
                log.info("applied migration %04d_%s", m.version, m.name)
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
