"""`riskstream decide serve` and `riskstream decide add-key`.

The service reads the worker's own settings (`RISKSTREAM_*`: Redis URL, prefix, bundle, rules,
window overrides, allowed lateness) so that both see the same windows; a few flags override them.
The Redis URL (it may carry a password) comes from `RISKSTREAM_REDIS_URL` or a file
(`--redis-url-file`), never from the command line; API keys are only ever stored hashed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from riskstream.decide.decider import DECISIONS, DecidePolicy, Decider
from riskstream.decide.exceptions import DecideError
from riskstream.decide.keys import KEYS_FILE_ENV, KeyStore, add_key
from riskstream.stackstate import dev_stack_defaults
from stream.exceptions import SettingsError
from stream.settings import ENV_PREFIX, WorkerSettings

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["DEFAULT_PORT", "decide_app", "load_decide_settings"]

DEFAULT_PORT = 8480
_DEFAULT_KEYS = ".riskstream/decide-keys"

decide_app = typer.Typer(
    help="Synchronous decisions (allow / review / block) on the stream's windows.",
    no_args_is_help=True,
)


def _keys_path(given: Path | None) -> Path:
    return given or Path(os.environ.get(KEYS_FILE_ENV, "").strip() or _DEFAULT_KEYS)


def load_decide_settings(overrides: dict[str, Any]) -> WorkerSettings:
    """The worker's settings from the environment, with `overrides` (flags) on top, the dev
    stack's Redis where nothing names one, secret files read; one line naming the setting when
    one is bad."""
    given = {k: v for k, v in overrides.items() if v is not None}
    as_env = {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in given.items()}
    found = dev_stack_defaults(as_env, names=("REDIS_URL",))  # it reads no topic
    given = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in found.items()} | given
    try:
        return WorkerSettings(**given).with_secret_files()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DecideError(f"setting {where}: {first['msg']}") from None
    except SettingsError as exc:
        raise DecideError(str(exc)) from None


@decide_app.command("serve")
def serve(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Model bundle (default: RISKSTREAM_BUNDLE).")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Rules file (default: RISKSTREAM_RULES).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (only this host by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = DEFAULT_PORT,
    keys_file: Annotated[
        Path | None,
        typer.Option(
            "--keys-file", help=f"API keys (default: ${KEYS_FILE_ENV} or {_DEFAULT_KEYS})."
        ),
    ] = None,
    redis_url_file: Annotated[
        Path | None,
        typer.Option(
            "--redis-url-file", help="A file holding the Redis URL (else RISKSTREAM_REDIS_URL)."
        ),
    ] = None,
    redis_prefix: Annotated[
        str | None, typer.Option("--redis-prefix", help="The worker's key prefix.")
    ] = None,
    timeout_ms: Annotated[
        int,
        typer.Option(
            "--timeout-ms",
            min=1,
            max=60_000,
            help="Deadline of a call (and Redis timeout): past it, the fallback decision.",
        ),
    ] = 100,
    on_redis_down: Annotated[
        str,
        typer.Option(
            "--on-redis-down",
            help="Decision when Redis fails or is late: allow (open), review, block (closed).",
        ),
    ] = "review",
    block_at: Annotated[
        str,
        typer.Option(
            "--block-at", help="Alert severities that block, comma-separated (others: review)."
        ),
    ] = "critical",
    deny_list: Annotated[
        str,
        typer.Option(
            "--deny-list", help="What a deny-list hit decides: block, or review (docs/lists.md)."
        ),
    ] = "block",
    rate_limit: Annotated[
        float,
        typer.Option("--rate-limit", min=0, help="Calls per second per API key (0: no limit)."),
    ] = 0.0,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="ONNX Runtime threads.")
    ] = 1,
    max_in_flight: Annotated[
        int,
        typer.Option("--max-in-flight", min=1, help="Decisions at once; beyond: fallback at once."),
    ] = 8,
    occlusion_top: Annotated[
        int, typer.Option("--occlusion-top", min=0, max=16, help="Driving events named per alert.")
    ] = 3,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Service processes sharing the port, each with its own model and --threads.",
        ),
    ] = 1,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            min=1,
            max=256,
            help="Concurrent calls decided in one batch (one Redis call, one model run); 1: none.",
        ),
    ] = 32,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            "--batch-wait-ms", min=0, max=50, help="Wait this long for a batch to fill (0: none)."
        ),
    ] = 0.0,
    http: Annotated[
        str, typer.Option("--http", help="HTTP parser: auto (httptools when installed), h11.")
    ] = "auto",
    loop: Annotated[
        str,
        typer.Option(
            "--loop",
            help="Event loop: asyncio, uvloop, or auto (uvloop when installed); asyncio by "
            "default: uvloop stalled some runs here (docs/benchmarks.md, Decision API).",
        ),
    ] = "asyncio",
) -> None:
    """Serve POST /v1/decide and /v1/score until Ctrl-C (docs/decide.md)."""
    import uvicorn

    if http not in ("auto", "h11", "httptools"):
        raise DecideError(f"--http: must be auto, h11 or httptools, got {http!r}")
    if loop not in ("auto", "asyncio", "uvloop"):
        raise DecideError(f"--loop: must be auto, asyncio or uvloop, got {loop!r}")
    options = {
        "bundle": str(bundle) if bundle else None, "rules": str(rules) if rules else None,
        "redis_url_file": str(redis_url_file) if redis_url_file else None,
        "redis_prefix": redis_prefix, "threads": threads, "timeout_ms": timeout_ms,
        "on_redis_down": on_redis_down, "block_at": block_at, "deny_list": deny_list,
        "occlusion_top": occlusion_top, "keys_file": str(_keys_path(keys_file)),
        "rate_limit": rate_limit, "max_in_flight": max_in_flight, "max_batch": max_batch,
        "batch_wait_ms": batch_wait_ms,
    }  # fmt: skip
    run: dict[str, Any] = {"host": host, "port": port, "log_level": "warning",
                           "proxy_headers": False, "http": http, "loop": loop}  # fmt: skip
    if workers == 1:
        uvicorn.run(_build_app(options, banner=f"http://{host}:{port}/v1/decide"), **run)
        return
    _check_options(options)  # one line in this process, before any worker starts
    if rate_limit:
        typer.echo(
            f"riskstream decide: --rate-limit holds per worker: a key may reach {workers} x "
            f"{rate_limit:g} calls/s over the {workers} workers",
            err=True,
        )
    # uvicorn's own supervisor (spawned workers on one listening socket, a dead one restarted):
    # the app is built in each worker from these options, after the fork.
    os.environ[_OPTIONS_ENV] = json.dumps(options)
    typer.echo(f"riskstream decide: http://{host}:{port}/v1/decide, {workers} workers", err=True)
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **run)


_OPTIONS_ENV = "RISKSTREAM_DECIDE_SERVE_OPTIONS"


def _check_options(options: dict[str, Any]) -> tuple[WorkerSettings, DecidePolicy]:
    """The settings and policy that `options` give; `DecideError` (one line) when one is bad."""
    if options["on_redis_down"] not in DECISIONS:
        raise DecideError(f"--on-redis-down: must be one of {', '.join(DECISIONS)}")
    if options["deny_list"] not in ("block", "review"):
        raise DecideError(f"--deny-list: must be block or review, got {options['deny_list']!r}")
    settings = load_decide_settings({
        "bundle": options["bundle"], "rules": options["rules"],
        "redis_url_file": options["redis_url_file"], "redis_prefix": options["redis_prefix"],
        "inference_threads": options["threads"],
    })  # fmt: skip
    try:
        policy = DecidePolicy(
            block_at=tuple(s.strip() for s in options["block_at"].split(",") if s.strip()),
            on_redis_down=options["on_redis_down"],
            block_deny_list=options["deny_list"] == "block",
            timeout_s=options["timeout_ms"] / 1000,
            occlusion_top=options["occlusion_top"],
            reload_poll_s=settings.reload_poll_s,
        )
    except ValueError as exc:
        raise DecideError(str(exc)) from None
    return settings, policy


def _build_app(options: dict[str, Any], banner: str | None = None) -> Starlette:
    from riskstream.decide.web import create_app

    settings, policy = _check_options(options)
    keys = KeyStore(Path(options["keys_file"]))
    count = len(keys.keys())
    decider = Decider(settings, policy)
    app = create_app(
        decider, keys, rate_per_s=options["rate_limit"], max_in_flight=options["max_in_flight"],
        max_batch=options["max_batch"], batch_wait_s=options["batch_wait_ms"] / 1000,
    )  # fmt: skip
    if banner is not None:
        typer.echo(
            f"riskstream decide: {banner}, model "
            f"{decider.slot.current.model_version}, rules {decider.rules.rules.version}, "
            f"{count} API key(s) in {keys.path}"
            + ("" if count else " (every call refused until `riskstream decide add-key`)"),
            err=True,
        )
    return app


def worker_app() -> Starlette:
    """The app of one worker of `serve --workers N` (uvicorn's factory, in the worker)."""
    return _build_app(json.loads(os.environ[_OPTIONS_ENV]))


@decide_app.command("add-key")
def add_key_cmd(
    name: Annotated[str, typer.Argument(help="Who the key is for (letters, digits, ._@-).")],
    keys_file: Annotated[Path | None, typer.Option("--keys-file")] = None,
) -> None:
    """Make a new API key, store its hash and print the key once (to stdout). Rotate: add a new
    key, move the callers to it, delete the old line; the service re-reads the file."""
    path = _keys_path(keys_file)
    key = add_key(path, name)
    typer.echo(f"added a key for {name} to {path} (shown once, stored hashed):", err=True)
    typer.echo(key)
