"""`riskstream shadow report`: the live model's alerts against the shadow's (see
`riskstream.tools.shadow`)."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from events.terminal import is_terminal
from riskstream.stackstate import DATABASE_URL_ENV, dev_database_url
from riskstream.tools.common import quiet_kafka, resolve_bootstrap
from riskstream.tools.exceptions import ToolError
from riskstream.tools.shadow import compare, parse_when, read_topic, read_verdicts, report_table

__all__ = ["shadow_app"]

shadow_app = typer.Typer(
    help="A shadow model (worker --shadow-bundle) against the live one.", no_args_is_help=True
)


def _database_url(wanted: bool | None) -> str | None:
    """The review database: `$RISKSTREAM_DATABASE_URL`, else the dev stack's; None when not
    wanted, or (not asked for explicitly) when there is none."""
    if wanted is False:
        return None
    url = os.environ.get(DATABASE_URL_ENV, "").strip() or dev_database_url()
    if url is None and wanted:
        raise ToolError(
            f"--decisions: no review database (set {DATABASE_URL_ENV}=postgresql://... or start "
            "the local stack with `riskstream dev up`)"
        )
    return url


@shadow_app.command("report")
def report(
    since: Annotated[
        str,
        typer.Option(
            "--since", help="Alerts detected from: RFC 3339, a date, epoch ms, or 24h / 7d ago."
        ),
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="… up to (excluded); default: now.")
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="kafka://host:port (default: the dev stack's broker)."),
    ] = None,
    alerts_topic: Annotated[str, typer.Option("--alerts-topic", help="Live alerts.")] = "alerts",
    shadow_topic: Annotated[
        str, typer.Option("--shadow-topic", help="The shadow's alerts.")
    ] = "alerts.shadow",
    decisions: Annotated[
        bool | None,
        typer.Option(
            "--decisions/--no-decisions",
            help=f"Analysts' verdicts from the review database (${DATABASE_URL_ENV}, else the "
            "dev stack's; default: when there is one).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
) -> None:
    """Alerts per head in live and shadow, the (user, head) pairs both alerted, only one, and
    each one's precision where analysts decided."""
    since_ms = parse_when(since, "--since")
    until_ms = parse_when(until, "--until") if until is not None else None
    if until_ms is not None and until_ms <= since_ms:
        raise ToolError(f"--until ({until}) must be after --since ({since})")
    quiet_kafka()
    bootstrap = resolve_bootstrap(broker)
    url = _database_url(decisions)
    verdicts = read_verdicts(url, since_ms, until_ms) if url is not None else None
    live = read_topic(bootstrap, alerts_topic)
    shadow = read_topic(bootstrap, shadow_topic)
    result = compare(live, shadow, verdicts, since_ms, until_ms)
    if as_json:
        sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
        return
    # Not a terminal (a file, a pipe): wide enough for the whole table, not cut at 80 columns.
    width = None if is_terminal(sys.stdout) else 160
    Console(highlight=False, width=width).print(report_table(result))


@shadow_app.command("promote")
def promote(
    shadow: Annotated[
        Path,
        typer.Option("--shadow-bundle", file_okay=False, help="The shadow bundle to make live."),
    ],
    bundle: Annotated[
        Path, typer.Option("--bundle", file_okay=False, help="The live bundle folder (replaced).")
    ],
) -> None:
    """Make the shadow bundle the live one: verified here, copied beside the live folder and
    swapped in atomically; a running worker's hot reload verifies it again and serves it (a
    refused one leaves the old model serving). The shadow folder is left as it is."""
    from export.exceptions import BundleError
    from export.install import swap_in
    from export.loader import verify_bundle

    try:
        manifest = verify_bundle(shadow)
    except BundleError as exc:
        raise ToolError(f"--shadow-bundle {shadow}: refused: {exc}") from None
    if shadow.resolve() == bundle.resolve():
        raise ToolError("--shadow-bundle and --bundle are the same folder")
    staging = bundle.parent / f".{bundle.name}.promote-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(shadow, staging, symlinks=False)
        verify_bundle(staging)  # the copy, not only the source
        swap_in(staging, bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    Console(highlight=False).print(
        f"{bundle} is now model {manifest.model_version}: running workers reload it within "
        "reload_poll_s (model_reloads_total; a refusal: model_refused_total)",
        soft_wrap=True,
    )
