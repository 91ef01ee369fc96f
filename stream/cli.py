"""`riskstream worker`: run the stream worker. Its flags are `WorkerSettings` fields by name;
what no flag gives comes from `RISKSTREAM_*` variables, else the defaults."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from events.terminal import is_terminal
from stream.exceptions import StreamError
from stream.settings import ENV_PREFIX, WorkerSettings

__all__ = ["given_settings", "load_settings", "settings_env", "worker"]


def given_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among `worker`'s parameters that were given (None or False: not given; the
    environment or the default decides). A parameter is named as the setting it sets: the
    signature is the one list of flags."""
    fields = WorkerSettings.model_fields
    return {k: v for k, v in params.items() if k in fields and v is not None and v is not False}


def settings_env(given: Mapping[str, Any]) -> dict[str, str]:
    """`given` as `RISKSTREAM_*` variables: how the supervisor hands the flags to its worker
    processes (a secret named by a file stays a file name)."""
    return {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in given.items()}


def load_settings(given: Mapping[str, Any] | None = None) -> WorkerSettings:
    """The worker's settings: `given` (from flags), else the environment, else the defaults;
    checked: a bundle must be there; secrets named by a file (`redis_url_file`,
    `sasl_password_file`) are read from it. A bad one: one line naming it."""
    try:
        settings = WorkerSettings(**dict(given or {})).with_secret_files()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if not where:  # a check of several settings together: its message names them
            raise StreamError(str(first["msg"]).removeprefix("Value error, ")) from None
        raise StreamError(f"{ENV_PREFIX}{where.upper()}: {first['msg']}") from None
    if not (settings.bundle / "manifest.json").is_file():
        raise StreamError(f"--bundle {settings.bundle}: no manifest.json (export a model first)")
    shadow = settings.shadow_bundle
    if shadow is not None and not (shadow / "manifest.json").is_file():
        raise StreamError(f"--shadow-bundle {shadow}: no manifest.json (export a model first)")
    return settings


def worker(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Model bundle folder (hot-reloaded).")
    ] = None,
    shadow_bundle: Annotated[
        Path | None,
        typer.Option(
            "--shadow-bundle",
            help="A second bundle judging the same windows (hot-reloaded): its scores and "
            "would-be alerts go to scores.shadow and alerts.shadow, never to alerts.",
        ),
    ] = None,
    broker_url: Annotated[str | None, typer.Option("--broker", help="kafka://host:port")] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis",
            help="redis://host:port/db (redis+cluster://host:port: Redis Cluster). A password "
            "here shows in `ps`: give it in RISKSTREAM_REDIS_URL or --redis-url-file instead.",
        ),
    ] = None,
    redis_url_file: Annotated[
        Path | None,
        typer.Option(
            "--redis-url-file",
            help="File holding the Redis URL (with its password), e.g. a mounted secret.",
        ),
    ] = None,
    redis_cluster: Annotated[
        bool, typer.Option("--redis-cluster", help="Redis Cluster (RedisCluster client).")
    ] = False,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="YAML rules file (hot-reloaded).")
    ] = None,
    consumer_group: Annotated[str | None, typer.Option("--group", help="Consumer group.")] = None,
    batch_max: Annotated[int | None, typer.Option("--batch-max", help="Messages/batch.")] = None,
    batch_wait_ms: Annotated[
        int | None, typer.Option("--batch-wait-ms", help="Max wait to fill a batch.")
    ] = None,
    latency_budget_ms: Annotated[
        int | None,
        typer.Option("--latency-budget-ms", help="Wait + processing per event (200); 0: off."),
    ] = None,
    cooldown_s: Annotated[
        int | None, typer.Option("--cooldown-s", help="Per user and type.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="/metrics and /health; 0: off.")
    ] = None,
    stall_exit_s: Annotated[
        float | None,
        typer.Option(
            "--stall-exit-s",
            min=0,
            help="Exit (code 76, restarted) when a partition with lag makes no progress this "
            "long while Redis and the broker answer (60); 0: never.",
        ),
    ] = None,
    debug_scores: Annotated[
        bool, typer.Option("--debug-scores", help="Publish every event's scores.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Faust log level.")] = "info",
) -> None:
    """Consume events, keep windows in Redis, score, publish alerts (settings: RISKSTREAM_*).

    Secrets never need the command line: RISKSTREAM_REDIS_URL or --redis-url-file for Redis,
    RISKSTREAM_SASL_PASSWORD or RISKSTREAM_SASL_PASSWORD_FILE for the broker."""
    settings = load_settings(given_settings(locals()))
    from stream.app import create_app

    app = create_app(settings)
    # Faust's banner and start-up spinner are terminal art (box drawing, escape codes, \r):
    # left out when stdout is a log file or a pipe; its log lines stay.
    quiet = [] if is_terminal(sys.stdout) else ["--quiet"]
    sys.argv = ["riskstream-worker", *quiet, "worker", "--without-web", "-l", log_level]
    app.main()
