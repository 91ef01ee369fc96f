"""The product's commands (train, export, worker, replay, alerts, review, ...) and `main`. Each
package contributes its own subcommands. The workshop's (`dev`, `demo`, `bench`) are added above
the product, by `riskstream.command` (the installed `riskstream`): the product never imports the
workshop."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from functools import partial
from typing import Annotated, Any

import typer
from rich.console import Console

from events.exceptions import RiskstreamError, UnwritableOutput
from export.cli import evaluate, export, score
from riskstream.decide.cli import decide_app
from riskstream.decide.cli import serve as decide_serve
from riskstream.review.cli import labels_app, lists_app, review_app
from riskstream.stackstate import dev_stack_defaults
from riskstream.supervisor import Supervisor, default_processes
from riskstream.tools.cli import alerts_app, backtest, replay
from riskstream.tools.common import bootstrap_servers, check_broker
from riskstream.tools.shadow_cli import shadow_app
from stream.cli import given_settings, load_settings, settings_env
from stream.cli import worker as stream_worker
from stream.preflight import preflight
from stream.settings import ENV_PREFIX
from training.cli import ingest, pretrain, simulate, train

__all__ = ["app", "main"]


def worker(
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            min=0,
            help="Worker processes on this host, one consumer group (0: one per core).",
        ),
    ] = 0,
    child: Annotated[
        bool, typer.Option("--child", hidden=True, help="Run as the supervisor's child.")
    ] = False,
    **kwargs: Any,
) -> None:
    if child:  # started by the supervisor below: the settings are in the environment, checked
        stream_worker(**kwargs)
        return
    # The stream layer knows nothing of the dev stack or of processes: both come from up here.
    given = given_settings(kwargs)
    found = dev_stack_defaults(settings_env(given))
    given |= {k.removeprefix(ENV_PREFIX).lower(): v for k, v in found.items()}
    settings = load_settings(given)  # a bad setting: one error here, not one per process
    # Faust would log an unreachable broker as a page of tracebacks: one line instead.
    check_broker(bootstrap_servers(settings.broker_url))
    preflight(settings)  # bundle, rules, Redis: one line each, before any process starts
    processes = processes or default_processes()
    # Supervised with one process too: a worker that ends itself (a stalled partition, a failed
    # batch) is restarted here, whether or not an orchestrator would.
    log_level = str(kwargs.get("log_level", "info"))
    command = [sys.executable, "-m", "riskstream", "worker", "--child"]
    port = settings.metrics_port
    base = {**os.environ, **settings_env(given)}  # the processes read the flags from here
    env = partial(child_env, base, processes=processes, metrics_port=port)
    code = Supervisor(processes, lambda _i: [*command, "--log-level", log_level], env).run()
    if code:
        raise typer.Exit(code)


def child_env(
    base: dict[str, str], index: int, *, processes: int, metrics_port: int
) -> dict[str, str]:
    """Worker process `index`'s environment: its own metrics port (0 stays 0: none), and
    ONNX Runtime's threads shared out (cores // processes each) unless set.

    >>> env = child_env({}, 1, processes=2, metrics_port=9100)
    >>> env["RISKSTREAM_METRICS_PORT"]
    '9101'
    >>> child_env({"RISKSTREAM_INFERENCE_THREADS": "3"}, 0, processes=2, metrics_port=0)
    {'RISKSTREAM_INFERENCE_THREADS': '3', 'RISKSTREAM_METRICS_PORT': '0'}
    """
    threads = str(max(1, default_processes() // processes))
    return {
        f"{ENV_PREFIX}INFERENCE_THREADS": threads,
        **base,
        f"{ENV_PREFIX}METRICS_PORT": str(metrics_port + index if metrics_port else 0),
    }


# typer reads the signature: `--processes`, then every option of the stream's own worker.
_KW = inspect.Parameter.KEYWORD_ONLY
worker.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.signature(worker, eval_str=True).parameters["processes"],
        inspect.signature(worker, eval_str=True).parameters["child"],
        *(
            p.replace(kind=_KW)
            for p in inspect.signature(stream_worker, eval_str=True).parameters.values()
        ),
    ]
)
worker.__doc__ = stream_worker.__doc__


app = typer.Typer(
    name="riskstream",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate)
app.command("ingest")(ingest)
app.command("pretrain")(pretrain)
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("export")(export)
app.command("score")(score)
app.command("worker")(worker)
app.command("replay")(replay)
app.command("backtest")(backtest)
app.add_typer(alerts_app, name="alerts")
app.add_typer(review_app, name="review")
app.add_typer(labels_app, name="labels")
app.add_typer(lists_app, name="lists")
app.add_typer(decide_app, name="decide")
app.command("serve", help="The decision API: the same as `riskstream decide serve` "
            "(docs/decide.md).")(decide_serve)  # fmt: skip
app.add_typer(shadow_app, name="shadow")

_err = Console(stderr=True, highlight=False)

#: Libraries that log every connection or file at INFO: WARNING unless --verbose.
NOISY_LOGGERS = ("kafka", "aiokafka", "urllib3", "matplotlib", "filelock", "httpx")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", help="Libraries' INFO logs too."),
) -> None:
    """Streaming fraud and abnormal-click detection for e-commerce events."""
    if verbose:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


def _os_error(exc: OSError) -> str:
    """One line naming the path and the problem, e.g. `/proc/x: No such file or directory`."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} → {exc.filename2}"
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad arguments and refused input give a one-line error, not a traceback."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    command = typer.main.get_command(app)
    try:
        # Not standalone: click returns the exit code of `raise typer.Exit(n)` instead of
        # raising it.
        code = command.main(args=argv, prog_name="riskstream", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, ...
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "riskstream"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        _err.print(f"error: {message} (see '{where} --help')", markup=False, soft_wrap=True)
        return int(getattr(exc, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        _err.print("aborted", markup=False)
        return 130
    except UnwritableOutput as exc:  # a bad --out is a bad argument: 2, like argparse
        _err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 2
    except RiskstreamError as exc:
        _err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 1
    except OSError as exc:  # a path that cannot be read or written: no traceback
        _err.print(f"error: {_os_error(exc)}", markup=False, soft_wrap=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
