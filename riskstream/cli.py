"""The `riskstream` command. Each package contributes its own subcommands."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from events.exceptions import RiskstreamError
from export.cli import export, score
from riskstream.bench.cli import bench_app
from riskstream.dev.cli import dev_app
from riskstream.tools.cli import alerts_app, replay
from stream.cli import worker
from training.cli import demo, evaluate, pretrain, simulate, train

__all__ = ["app", "main"]

app = typer.Typer(
    name="riskstream",
    help="Streaming fraud and abnormal-click detection for e-commerce events.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate)
app.command("pretrain")(pretrain)
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("export")(export)
app.command("score")(score)
app.command("worker")(worker)
app.command("demo")(demo)
app.add_typer(bench_app, name="bench")
app.add_typer(dev_app, name="dev")
app.command("replay")(replay)
app.add_typer(alerts_app, name="alerts")

_err = Console(stderr=True, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad arguments and refused input give a one-line error, not a traceback."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    except RiskstreamError as exc:
        _err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
