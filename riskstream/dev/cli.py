"""`riskstream dev up | down | status`: the local broker and Redis, in the background."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from events.redaction import redact
from riskstream.dev.exceptions import DevStackError
from riskstream.dev.stack import (
    BROKER_BASE_PORT,
    DEV_STATE_ENV,
    POSTGRES_BASE_PORT,
    REDIS_BASE_PORT,
    REVIEW_BASE_PORT,
    DevState,
    PartStatus,
    ServiceRecord,
    dev_down,
    dev_status,
    dev_up,
    load_state,
    resolve_state_path,
    review_users_file,
)
from riskstream.tools.common import quiet_kafka

__all__ = ["dev_app", "status_table"]

dev_app = typer.Typer(
    help="A local Kafka-compatible broker (Tansu), Redis and PostgreSQL, in the background.",
    no_args_is_help=True,
)

StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state",
        dir_okay=False,
        help=f"State file (default: ${DEV_STATE_ENV}, else .riskstream/dev.json here).",
    ),
]

_DEFAULT_BUNDLE = "out/demo/bundle"


def _out() -> Console:
    return Console(highlight=False)


def _record(state: DevState, part: str) -> ServiceRecord | None:
    records = {"broker": state.broker, "redis": state.redis, "postgres": state.postgres}
    return {**records, "review": state.review}[part]


def _where(state: DevState, part: str) -> str:
    record = _record(state, part)
    return redact(record.url) if record is not None else "-"


@dev_app.command("up")
def up_cmd(
    state: StateOpt = None,
    broker_port: Annotated[
        int,
        typer.Option("--broker-port", min=1, max=65535, help="Broker port (or the next free)."),
    ] = BROKER_BASE_PORT,
    redis_port: Annotated[
        int,
        typer.Option("--redis-port", min=1, max=65535, help="Valkey port (or the next free)."),
    ] = REDIS_BASE_PORT,
    postgres_port: Annotated[
        int,
        typer.Option(
            "--postgres-port", min=1, max=65535, help="PostgreSQL port (or the next free)."
        ),
    ] = POSTGRES_BASE_PORT,
    review_port: Annotated[
        int,
        typer.Option(
            "--review-port", min=1, max=65535, help="Review console port (or the next free)."
        ),
    ] = REVIEW_BASE_PORT,
    review: Annotated[
        bool,
        typer.Option("--review/--no-review", help="Also run the review service and console."),
    ] = True,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", min=1.0, help="Per part, to answer.")
    ] = 60.0,
) -> None:
    """Start the broker, Redis (REDIS_URL if set), PostgreSQL (RISKSTREAM_DATABASE_URL if set)
    and the review service, create the topics; idempotent."""
    quiet_kafka()
    result = dev_up(
        state,
        broker_port=broker_port,
        redis_port=redis_port,
        postgres_port=postgres_port,
        review_port=review_port,
        review=review,
        timeout_s=timeout_s,
    )
    st = result.state
    table = Table(title=f"riskstream dev stack ({result.state_path})")
    for col in ("part", "what", "listens on", "pid", "now", "log"):
        table.add_column(col, overflow="fold")  # wrap, never cut: paths and URLs are long
    for part in ("broker", "redis", "postgres", "review"):
        record = _record(st, part)
        if record is None:  # --no-review (the others: dev_up raises before that)
            continue
        table.add_row(
            part,
            record.label,
            _where(st, part),
            str(record.pid) if record.pid is not None else "-",
            result.actions.get(part, "?"),
            record.log or "-",
        )
    out = _out()
    out.print(table)
    topics = ", ".join(f"{name} ({n})" for name, n in st.topics.items())
    out.print(f"topics: {topics}", soft_wrap=True)
    out.print(
        "worker: riskstream worker --bundle BUNDLE  (it finds this stack; "
        f"{_DEFAULT_BUNDLE} once `riskstream demo` has run)",
        soft_wrap=True,
    )
    out.print("then:   riskstream replay --events FILE; riskstream alerts tail --follow")
    _print_review(out, st)
    if not result.started_anything:
        out.print("(everything was already running: nothing started)")


@dev_app.command("down")
def down_cmd(
    state: StateOpt = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", min=0.1, help="SIGTERM grace before SIGKILL.")
    ] = 10.0,
) -> None:
    """Stop what `dev up` started (never an external Redis) and remove the state file."""
    quiet_kafka()
    result = dev_down(state, timeout_s=timeout_s)
    out = _out()
    if not result.records:
        out.print(f"nothing to stop: no dev stack recorded in {result.state_path}")
        return
    for part in ("review", "broker", "redis", "postgres"):
        record = result.records.get(part)
        if record is None:
            continue
        action = result.actions.get(part, "?")
        pid = f" (pid {record.pid})" if record.pid is not None else ""
        out.print(f"{part}: {record.label} at {redact(record.url)}{pid}: {action}", soft_wrap=True)
    out.print(f"removed {result.state_path}")


def _print_review(out: Console, state: DevState) -> None:
    """The console's URL and, while its users file has nobody, how to add the first user."""
    if state.review is None:
        out.print("review: not started (`riskstream dev up` without --no-review starts it)")
        return
    from riskstream.review.auth import UserStore
    from riskstream.review.exceptions import AuthError

    users = review_users_file()
    try:
        count = len(UserStore(users).users())  # no file: none
    except AuthError:
        count = 0
    out.print(f"review: {state.review.url}  (alerts → cases; console on this stack's PostgreSQL)",
              soft_wrap=True)  # fmt: skip
    if count == 0:
        out.print("        no user yet: riskstream review add-user NAME  (signs in at once)")
    else:
        out.print(f"        {count} user(s) in {users}; riskstream review add-user NAME adds one",
                  soft_wrap=True)  # fmt: skip


def status_table(parts: list[PartStatus], state_path: Path) -> Table:
    """Each part, what it is, where it listens, its pid and state: columns fold, never cut."""
    table = Table(title=f"riskstream dev stack ({state_path})")
    for col in ("part", "what", "listens on", "pid", "state"):
        table.add_column(col, overflow="fold")
    for p in parts:
        r = p.record
        if r is None:
            table.add_row(p.part, "-", "-", "-", "[red]missing[/red]")
            continue
        if p.up:
            word = "[green]alive[/green]"
        elif p.alive:
            word = "[yellow]alive, not listening[/yellow]"
        else:
            word = "[red]dead[/red]"
        pid = str(r.pid) if r.pid is not None else "-"
        table.add_row(p.part, r.label, redact(r.url), pid, word)
    return table


@dev_app.command("status")
def status_cmd(state: StateOpt = None) -> None:
    """Each part alive or dead; exit 0 when all are up, 1 otherwise."""
    quiet_kafka()
    parts = dev_status(state)
    out = _out()
    if parts is None:
        # An error, not typer.Exit(1): `riskstream.cli.main` runs click in non-standalone
        # mode, where an Exit's code is returned by click and not passed on.
        raise DevStackError(
            f"no dev stack recorded in {resolve_state_path(state)} (`riskstream dev up` starts one)"
        )
    out.print(status_table(parts, resolve_state_path(state)))
    recorded = load_state(state)
    if recorded is not None:
        _print_review(out, recorded)
    down = [p.part for p in parts if not p.up]
    if down:
        raise DevStackError(f"not up: {', '.join(down)} (`riskstream dev up` restarts what died)")
