"""`riskstream worker`: run the stream worker (flags become `RISKSTREAM_*` settings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from events.terminal import is_terminal
from stream.exceptions import StreamError
from stream.settings import ENV_PREFIX, WorkerSettings

__all__ = ["flags_env", "load_settings", "worker"]


#: `worker`'s parameters → the settings they set.
_FLAG_SETTINGS = {
    "bundle": "bundle",
    "shadow_bundle": "shadow_bundle",
    "broker": "broker_url",
    "redis_url": "redis_url",
    "redis_url_file": "redis_url_file",
    "redis_cluster": "redis_cluster",
    "rules": "rules",
    "group": "consumer_group",
    "batch_max": "batch_max",
    "batch_wait_ms": "batch_wait_ms",
    "latency_budget_ms": "latency_budget_ms",
    "cooldown_s": "cooldown_s",
    "metrics_port": "metrics_port",
    "stall_exit_s": "stall_exit_s",
    "debug_scores": "debug_scores",
}


def flags_env(params: dict[str, object]) -> dict[str, str]:
    """The `RISKSTREAM_*` variables that `worker`'s given parameters set (None or False: not
    given, the environment or the default decides)."""
    return {
        f"{ENV_PREFIX}{setting.upper()}": str(params[name])
        for name, setting in _FLAG_SETTINGS.items()
        if params.get(name) is not None and params.get(name) is not False  # 0 is a value
    }


def load_settings() -> WorkerSettings:
    """The worker's settings from the environment, checked: a bundle must be there; secrets
    named by a file (`redis_url_file`, `sasl_password_file`) are read from it."""
    try:
        settings = WorkerSettings().with_secret_files()
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
    broker: Annotated[str | None, typer.Option("--broker", help="kafka://host:port")] = None,
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
    group: Annotated[str | None, typer.Option("--group", help="Consumer group.")] = None,
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
    os.environ.update(flags_env(locals()))
    settings = load_settings()
    from stream.app import create_app

    app = create_app(settings)
    # Faust's banner and start-up spinner are terminal art (box drawing, escape codes, \r):
    # left out when stdout is a log file or a pipe; its log lines stay.
    quiet = [] if is_terminal(sys.stdout) else ["--quiet"]
    sys.argv = ["riskstream-worker", *quiet, "worker", "--without-web", "-l", log_level]
    app.main()
