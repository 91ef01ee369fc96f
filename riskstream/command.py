"""The installed `riskstream` command (and `python -m riskstream`): the product's commands
(`riskstream.cli`) with the workshop's — `dev` (the local stack), `demo` and `bench` — added.

This module sits above both layers: the workshop may import the product, the product never
imports the workshop (tests/unit/test_layers.py), so the two meet only here.
"""

from __future__ import annotations

from riskstream import cli
from riskstream.bench.cli import bench_app
from riskstream.demo.cli import demo
from riskstream.dev.cli import dev_app

__all__ = ["app", "main"]

app = cli.app
app.command("demo")(demo)
app.add_typer(bench_app, name="bench")
app.add_typer(dev_app, name="dev")


def main(argv: list[str] | None = None) -> int:
    """`riskstream ARGV`: every command, product and workshop (see `riskstream.cli.main`)."""
    return cli.main(argv)
