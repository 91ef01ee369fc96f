"""`python -m training train ...`: the `riskstream train` command alone, for torchrun
(`torchrun --nproc-per-node N -m training train --events ... --out ...`), which starts one such
process per rank; `riskstream train --nproc N` does that for you."""

from __future__ import annotations

import sys

import typer

from training.cli import train

app = typer.Typer(add_completion=False, no_args_is_help=True)
app.command("train")(train)


@app.callback()
def _main() -> None:
    """The trainer, one rank of a distributed run."""


if __name__ == "__main__":
    try:
        app(standalone_mode=False)
    except Exception as exc:  # one line per rank, not a traceback each; the exit code tells
        print(f"training rank failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
