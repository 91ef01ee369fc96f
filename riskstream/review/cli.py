"""`riskstream review` (the service; `add-user`, `migrate`) and `riskstream labels export`."""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from events.outputs import check_output
from events.redaction import redact
from riskstream.review.exceptions import AuthError, ReviewError
from riskstream.review.settings import DEFAULT_PORT, ReviewSettings
from riskstream.stackstate import DATABASE_URL_ENV, dev_database_url
from stream.lists import Entry, parse_entry

__all__ = ["labels_app", "lists_app", "resolve_database_url", "review_app"]

review_app = typer.Typer(
    help="The analysts' review service: alerts → cases in PostgreSQL, the console, decisions.",
    invoke_without_command=True,
)
labels_app = typer.Typer(help="Labels from analysts' decisions.", no_args_is_help=True)
lists_app = typer.Typer(
    help="Allow / deny lists (users, devices, payment methods, IP prefixes): every change "
    "audited in the review database (docs/lists.md).",
    no_args_is_help=True,
)

_out = Console(highlight=False)
BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", help="kafka://host:port (default: the dev stack's broker)."),
]
UsersOpt = Annotated[
    Path | None,
    typer.Option(
        "--users-file",
        dir_okay=False,
        help="Users file (default: $RISKSTREAM_REVIEW_USERS_FILE, else .riskstream/review-users).",
    ),
]


def resolve_database_url() -> str:
    """`$RISKSTREAM_DATABASE_URL`, else the dev stack's PostgreSQL, else an error."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    found = dev_database_url()
    if found is not None:
        return found
    raise ReviewError(
        f"no database: set {DATABASE_URL_ENV}=postgresql://... or start the local stack "
        "(`riskstream dev up` runs an embedded PostgreSQL)"
    )


def _bootstrap(broker: str | None) -> str:
    from riskstream.tools.common import resolve_bootstrap

    return resolve_bootstrap(broker)


@review_app.callback()
def review(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to listen on (default 127.0.0.1: this machine)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help=f"Port (default {DEFAULT_PORT})."),
    ] = None,
    users_file: UsersOpt = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warn.")] = "info",
) -> None:
    """Run the review service: consume alerts into cases, serve the console, publish decisions.

    The database comes from $RISKSTREAM_DATABASE_URL (never a flag: it may hold a password), else
    from the dev stack; the session secret from $RISKSTREAM_REVIEW_SECRET (random when unset)."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from riskstream.review.service import run_service
    from riskstream.tools.common import quiet_kafka

    level = {"warn": "WARNING"}.get(log_level.lower(), log_level.upper())
    logging.getLogger().setLevel(level)
    quiet_kafka()
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    flags = {"host": host, "port": port, "users_file": users_file, "group": group}
    settings = ReviewSettings(
        database_url=resolve_database_url(),
        bootstrap=_bootstrap(broker),
        **{k: v for k, v in flags.items() if v is not None},
    )
    settings.proxies()  # a bad RISKSTREAM_REVIEW_TRUSTED_PROXIES: one line now, not at sign-in
    if not settings.users_file.exists():
        raise AuthError(
            f"no users file at {settings.users_file}: add one with "
            f"`riskstream review add-user NAME --users-file {settings.users_file}`"
        )
    shadow = settings.shadow_alerts_topic.strip()
    shadow_text = f" and {shadow} (shadow)" if shadow not in ("", "-") else ""
    _out.print(
        f"review console: http://{settings.host}:{settings.port}/  (database "
        f"{redact(settings.database_url)}, alerts from {settings.alerts_topic}{shadow_text}, "
        f"decisions to {settings.decisions_topic})",
        soft_wrap=True,
    )
    run_service(settings)


@review_app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, ._@-).")],
    users_file: UsersOpt = None,
) -> None:
    """Add a console user, or set their password: asked twice at a prompt, or one line on
    stdin when it is not a terminal (never on the command line)."""
    path = users_file or ReviewSettings(database_url="", bootstrap="").users_file
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise AuthError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    from riskstream.review.auth import set_user

    new = set_user(path, name, password)
    _out.print(f"{'added' if new else 'updated'} {name} in {path}")


@review_app.command("migrate")
def migrate_cmd() -> None:
    """Apply the pending schema migrations to the database and exit."""
    from riskstream.review.migrate import migrate

    applied = migrate(resolve_database_url())
    _out.print(f"applied {applied}" if applied else "schema up to date")


def _when(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    from events import parse_ts_ms

    try:
        if len(value) == 10:  # a date: its midnight UTC
            return int(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp() * 1000)
        return parse_ts_ms(value)
    except ValueError as exc:
        raise ReviewError(f"{name}: {exc} (RFC 3339, epoch ms or YYYY-MM-DD)") from None


@labels_app.command("export")
def export_labels(
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="feedback JSONL to write.")],
    since: Annotated[
        str | None, typer.Option("--since", help="Decisions known at or after (RFC 3339 / date).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="...and before (default: now).")
    ] = None,
    from_topic: Annotated[
        bool, typer.Option("--from-topic", help="Read the decisions topic, not the database.")
    ] = False,
    broker: BrokerOpt = None,
    topic: Annotated[str, typer.Option("--topic", help="Decisions topic.")] = "decisions",
) -> None:
    """Decisions → feedback lines for `riskstream train --feedback`: confirmed cases as positive
    episodes of their type, false positives as known negatives, each with when it became known."""
    from riskstream.review.labels import (
        decisions_from_database,
        decisions_from_topic,
        write_feedback,
    )

    check_output(out, "--out")
    since_ms, until_ms = _when(since, "--since"), _when(until, "--until")
    if from_topic:
        decisions = decisions_from_topic(_bootstrap(broker), topic, since_ms, until_ms)
    else:
        decisions = decisions_from_database(resolve_database_url(), since_ms, until_ms)
    counts = write_feedback(decisions, out)
    _out.print(
        f"{out}: {counts['positive']} positive episodes, {counts['negative']} known negatives "
        f"({counts['skipped']} escalations left out) from {len(decisions)} decisions"
    )


FileOpt = Annotated[
    Path, typer.Option("--file", dir_okay=False, help="The lists file (named in the rules file).")
]
ByOpt = Annotated[
    str | None, typer.Option("--by", help="Who makes the change (default: the login name).")
]


def _actor(by: str | None) -> str:
    return by or getpass.getuser()


def _audited(path: Path, operation: Literal["add", "remove"], entry: Entry, actor: str) -> int:
    """Apply one audited list change (migrating the schema first: the audit table is in it)."""
    import asyncio

    from psycopg import AsyncConnection

    from riskstream.review.lists import change_list
    from riskstream.review.migrate import migrate

    url = resolve_database_url()
    migrate(url)

    async def run() -> int:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            return await change_list(conn, path, operation, entry, actor=actor, source="cli")

    return asyncio.run(run())


def _entry_of(action: str, kind: str, value: str, expires: str, reason: str) -> Entry:
    if not value or any(c.isspace() for c in value):
        raise ReviewError(f"value: {value!r} must be non-empty and hold no whitespace")
    try:
        entry = parse_entry(f"{action} {kind} {value} {expires} {reason or '-'}")
    except ValueError as exc:
        raise ReviewError(str(exc)) from None
    assert entry is not None
    return entry


@lists_app.command("add")
def lists_add(
    action: Annotated[str, typer.Argument(help="allow, deny or deny:abnormal_click.")],
    kind: Annotated[str, typer.Argument(help="user, device, payment or ip.")],
    value: Annotated[str, typer.Argument(help="The id, payment fingerprint or CIDR prefix.")],
    path: FileOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the file and the audit).")],
    expires: Annotated[
        str, typer.Option("--expires", help="RFC 3339, YYYY-MM-DD or never.")
    ] = "never",
    by: ByOpt = None,
) -> None:
    """Add an entry; the worker applies it within a batch (docs/lists.md)."""
    entry = _entry_of(action, kind, value, expires, reason)
    _audited(path, "add", entry, _actor(by))
    _out.print(f"added to {path}: {entry.text()}")


@lists_app.command("remove")
def lists_remove(
    action: Annotated[str, typer.Argument(help="allow or deny.")],
    kind: Annotated[str, typer.Argument(help="user, device, payment or ip.")],
    value: Annotated[str, typer.Argument(help="The value to take off the list.")],
    path: FileOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit).")],
    by: ByOpt = None,
) -> None:
    """Remove every entry of that action, kind and value."""
    entry = _entry_of(action.partition(":")[0], kind, value, "never", reason)
    removed = _audited(path, "remove", entry, _actor(by))
    _out.print(f"removed {removed} line(s) from {path}")


@lists_app.command("show")
def lists_show(
    path: FileOpt,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind.")] = None,
    value: Annotated[str | None, typer.Option("--value", help="Only this value.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Also the audited changes (the database).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows shown at most.")] = 50,
) -> None:
    """The entries (live or expired) and, with --history, who changed what, when and why."""
    import time

    from rich.table import Table

    from events import format_ts_ms
    from stream.lists import NEVER_MS, load_lists

    lists = load_lists([path])  # refuses a bad file with its line, as the worker does
    now = int(time.time() * 1000)
    table = Table("line", "action", "kind", "value", "expires", "state", "reason")
    shown = 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        e = parse_entry(line, lineno)
        if e is None or (kind and e.kind != kind) or (value and e.value != value):
            continue
        if shown < limit:
            action = e.action if e.action == "allow" else f"deny:{e.alert_type}"
            table.add_row(
                str(lineno), action, e.kind, e.value,
                "never" if e.expires_ms == NEVER_MS else format_ts_ms(e.expires_ms),
                "live" if e.expires_ms > now else "expired", e.reason,
            )  # fmt: skip
        shown += 1
    _out.print(table)
    _out.print(f"{path}: {lists.entries:,} entries ({lists.version}); {shown:,} shown"
               f"{' (first ' + str(limit) + ')' if shown > limit else ''}",
               soft_wrap=True)  # fmt: skip
    if history:
        import asyncio

        from psycopg import AsyncConnection

        from riskstream.review.lists import list_history

        url = resolve_database_url()

        async def rows() -> list[dict[str, object]]:
            async with await AsyncConnection.connect(url, autocommit=True) as conn:
                return await list_history(conn, kind, value, limit)

        audit = Table("when", "who", "change", "kind", "value", "expires", "why", "source")
        for r in asyncio.run(rows()):
            exp = r["expires_at"]
            audit.add_row(
                str(r["changed_at"]), str(r["actor"]), f"{r['operation']} {r['action']}",
                str(r["kind"]), str(r["value"]), "never" if exp is None else str(exp),
                str(r["reason"]),
                f"{r['source']}" + (f" (case {r['case_id']})" if r["case_id"] else ""),
            )  # fmt: skip
        _out.print(audit)
