"""`riskstream review` (the service; `add-user`, `migrate`) and `riskstream labels export`."""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from events.outputs import check_output
from events.redaction import redact
from riskstream.review.exceptions import AuthError, ReviewError
from riskstream.review.settings import DEFAULT_PORT, ReviewSettings
from riskstream.stackstate import DATABASE_URL_ENV, dev_database_url

__all__ = ["labels_app", "resolve_database_url", "review_app"]

review_app = typer.Typer(
    help="The analysts' review service: alerts → cases in PostgreSQL, the console, decisions.",
    invoke_without_command=True,
)
labels_app = typer.Typer(help="Labels from analysts' decisions.", no_args_is_help=True)

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
    _out.print(
        f"review console: http://{settings.host}:{settings.port}/  (database "
        f"{redact(settings.database_url)}, alerts from {settings.alerts_topic}, decisions to "
        f"{settings.decisions_topic})",
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
