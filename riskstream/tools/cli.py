"""`riskstream replay` and `riskstream alerts tail`: feed a worker, read what it raises."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from riskstream.tools.alerts import (
    AlertReader,
    alert_json_line,
    alerts_table,
    detected_ms,
    iter_alert_batches,
)
from riskstream.tools.common import quiet_kafka, resolve_bootstrap
from riskstream.tools.exceptions import ToolError
from riskstream.tools.replay import replay_file

__all__ = ["alerts_app", "replay"]

alerts_app = typer.Typer(help="Read the alerts the worker publishes.", no_args_is_help=True)

BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="kafka://host:port (default: the `riskstream dev up` stack's broker).",
    ),
]


class CompressionChoice(StrEnum):
    """Kafka's codecs (`--compression`)."""

    none = "none"
    gzip = "gzip"
    snappy = "snappy"
    lz4 = "lz4"
    zstd = "zstd"


class AlertTypeChoice(StrEnum):
    """The alert types (`--type`)."""

    fraud = "fraud"
    abnormal_click = "abnormal_click"


def replay(
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSON-lines event file (one event per line).",
        ),
    ],
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.001, help="Events/s, paced open-loop (token bucket)."),
    ] = None,
    max_speed: Annotated[
        bool, typer.Option("--max", help="As fast as possible (the default).")
    ] = False,
    speedup: Annotated[
        float | None,
        typer.Option("--speedup", min=0.001, help="X times the events' own `ts` gaps."),
    ] = None,
    broker: BrokerOpt = None,
    topic: Annotated[str, typer.Option("--topic", help="Topic to produce to.")] = "events",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Send at most N.")] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
    compression: Annotated[
        CompressionChoice,
        typer.Option("--compression", help="Compress the record batches with this codec."),
    ] = CompressionChoice.none,
) -> None:
    """Produce an event file to Kafka, keyed by user_id; print the achieved rate.

    SSL/SASL: the worker's settings, from the environment (RISKSTREAM_SECURITY_PROTOCOL,
    RISKSTREAM_SASL_USERNAME, RISKSTREAM_SASL_PASSWORD or RISKSTREAM_SASL_PASSWORD_FILE,
    RISKSTREAM_SSL_CAFILE, ...): no secret on the command line."""
    quiet_kafka()
    logging.getLogger("riskstream.tools.replay").setLevel(logging.WARNING)  # printed below
    chosen = [name for name, on in (("--rate", rate), ("--max", max_speed), ("--speedup", speedup))
              if on]  # fmt: skip
    if len(chosen) > 1:
        raise ToolError(f"{' and '.join(chosen)} exclude each other: choose one pacing")
    bootstrap = resolve_bootstrap(broker)
    summary = replay_file(
        events,
        bootstrap,
        topic=topic,
        rate=rate,
        speedup=speedup,
        limit=limit,
        progress=progress,
        compression=compression.value,
    )
    out = Console(highlight=False)
    out.print(summary.describe(), soft_wrap=True)
    spread = ", ".join(f"p{p}: {n:,}" for p, n in summary.partitions.items())
    out.print(f"per partition: {spread or '-'}", soft_wrap=True)
    if summary.failed:
        raise ToolError(
            f"{summary.failed:,} of {summary.sent + summary.failed:,} records were not "
            f"acknowledged (first: {summary.errors[0] if summary.errors else '?'})"
        )


@alerts_app.command("tail")
def tail_cmd(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep reading new alerts until Ctrl-C.")
    ] = False,
    alert_type: Annotated[
        AlertTypeChoice | None, typer.Option("--type", help="Only this type.")
    ] = None,
    as_json: Annotated[
        bool | None,
        typer.Option(
            "--json/--table",
            help="JSON lines or a table (default: a table on a terminal, JSON lines when piped).",
            show_default=False,
        ),
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning/--from-end", help="Start at the oldest or newest alert."),
    ] = True,
    broker: BrokerOpt = None,
    topic: Annotated[str, typer.Option("--topic", help="The alerts topic.")] = "alerts",
    max_alerts: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after N alerts.")
    ] = None,
    timeout_s: Annotated[
        float | None, typer.Option("--timeout-s", min=0.1, help="Stop after S seconds.")
    ] = None,
) -> None:
    """Print alerts as a table on a terminal, JSON lines when piped or redirected (a table
    there would be cut at 80 columns); without --follow, stop once drained.

    SSL/SASL: the worker's settings, from the environment (RISKSTREAM_SECURITY_PROTOCOL,
    RISKSTREAM_SASL_USERNAME, RISKSTREAM_SASL_PASSWORD or RISKSTREAM_SASL_PASSWORD_FILE,
    RISKSTREAM_SSL_CAFILE, ...): no secret on the command line."""
    quiet_kafka()
    bootstrap = resolve_bootstrap(broker)
    if as_json is None:
        as_json = not sys.stdout.isatty()
    out = Console(highlight=False)
    kind = alert_type.value if alert_type is not None else None
    with AlertReader(bootstrap, topic, alert_type=kind, from_beginning=from_beginning) as reader:
        batches = iter_alert_batches(
            reader, follow=follow, max_alerts=max_alerts, timeout_s=timeout_s
        )
        shown = 0
        if follow:  # print as they come
            for batch in batches:
                if as_json:
                    for alert in batch:
                        sys.stdout.write(alert_json_line(alert) + "\n")
                    sys.stdout.flush()
                else:
                    out.print(alerts_table(batch, header=shown == 0))
                shown += len(batch)
        else:
            alerts = sorted((a for b in batches for a in b), key=detected_ms)
            shown = len(alerts)
            if as_json:
                for alert in alerts:
                    sys.stdout.write(alert_json_line(alert) + "\n")
            elif alerts:
                out.print(alerts_table(alerts, title=f"{topic} on {reader.bootstrap}"))
        if not as_json:
            what = f" of type {kind}" if kind else ""
            skipped = f", {reader.skipped} records skipped (not JSON)" if reader.skipped else ""
            out.print(f"{shown} alerts{what} ({reader.records} records read{skipped})")


def _when(value: str | None, flag: str) -> int | None:
    """An RFC 3339 time or epoch milliseconds, or a one-line refusal naming the flag."""
    from events import parse_ts_ms

    if value is None:
        return None
    try:
        return parse_ts_ms(int(value) if value.isdigit() else value)
    except ValueError as exc:
        raise ToolError(f"{flag}: {exc}") from None


def backtest(
    events: Annotated[
        Path,
        typer.Option(
            "--events", exists=True, help="Event history: JSON lines, or a dataset (ingest)."
        ),
    ],
    bundle: Annotated[
        Path, typer.Option("--bundle", exists=True, file_okay=False, help="Model bundle folder.")
    ],
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Folder for the report and alerts.")
    ],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", exists=True, dir_okay=False, help="Label episodes (JSONL)."),
    ] = None,
    feedback: Annotated[
        Path | None,
        typer.Option(
            "--feedback",
            exists=True,
            dir_okay=False,
            help="Analysts' decisions and chargebacks (the JSONL train --feedback reads): "
            "confirmed ones count as label episodes.",
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", exists=True, dir_okay=False, help="Rules file (YAML)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Period start (RFC 3339 or epoch ms).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Period end, excluded (RFC 3339 or epoch ms).")
    ] = None,
    cooldown_s: Annotated[
        int | None, typer.Option("--cooldown-s", min=0, help="Default: the worker's.")
    ] = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="fp32, int8 or fp16 (default: the worker's).")
    ] = None,
    compare_bundle: Annotated[
        Path | None,
        typer.Option(
            "--compare", exists=True, file_okay=False, help="Bundle B, replayed beside --bundle."
        ),
    ] = None,
    compare_rules: Annotated[
        Path | None,
        typer.Option(
            "--compare-rules", exists=True, dir_okay=False, help="Rules B, beside --rules."
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=65536)] = 512,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
) -> None:
    """Replay history through the worker's own processor, rules and cooldowns (in memory, no
    broker, no Redis): the alerts it would have raised, measured against the labels. With
    --compare / --compare-rules, B too (under OUT/b) and what differs (OUT/compare.json)."""
    from dataclasses import replace

    import orjson

    from events import check_output
    from riskstream.tools.backtest import (
        TABLE_HEADER,
        BacktestOptions,
        compare,
        measure,
        merge_labels,
        read_labels,
        run_backtest,
        table_rows,
        write_outputs,
    )

    check_output(out, "--out", folder=True)
    if device not in ("auto", "cpu", "cuda"):
        raise ToolError(f"--device: {device!r} is not one of auto, cpu, cuda")
    options = BacktestOptions(
        since_ms=_when(since, "--since"),
        until_ms=_when(until, "--until"),
        batch_size=batch_size,
        device=device,
        variant=variant,
        progress=progress,
    )
    if cooldown_s is not None:
        options = replace(options, cooldown_s=cooldown_s)
    given = read_labels(labels) if labels is not None else None
    result = run_backtest(bundle, events, rules, options, feedback=feedback)
    episodes = merge_labels(given, result.feedback.episodes if result.feedback else None)
    metrics = measure(result, episodes)
    written = write_outputs(result, metrics, out)
    logging.getLogger("riskstream.tools.backtest").info(
        "backtest: wrote %s", ", ".join(str(p) for p in written)
    )
    from rich.table import Table

    table = Table(title=f"Backtest of {result.report['model_version']} → {out}")
    for name in TABLE_HEADER:
        table.add_column(name, justify="left" if name == "source" else "right", overflow="fold")
    for row in table_rows(metrics):
        table.add_row(*row)
    console = Console(highlight=False)
    console.print(table)
    if compare_bundle is None and compare_rules is None:
        return
    other = run_backtest(
        compare_bundle or bundle, events, compare_rules or rules, options
    )  # the same history, the same options: B
    b_metrics = measure(other, episodes)
    write_outputs(other, b_metrics, out / "b")
    diff = compare(result, other)
    (out / "compare.json").write_bytes(orjson.dumps(diff, option=orjson.OPT_INDENT_2))
    diff_table = Table(
        title=f"A: {result.report['model_version']}, rules {rules or '-'} · "
        f"B: {other.report['model_version']}, rules {compare_rules or rules or '-'}"
    )
    for name in ("type", "only A", "only B", "both", "users only A", "users only B"):
        diff_table.add_column(name, justify="left" if name == "type" else "right", overflow="fold")
    for kind, d in diff.items():
        diff_table.add_row(
            kind,
            f"{d['only_a']:,}",
            f"{d['only_b']:,}",
            f"{d['both']:,}",
            f"{d['users_only_a']:,}",
            f"{d['users_only_b']:,}",
        )
    console.print(diff_table)
