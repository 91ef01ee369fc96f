"""The files a user starts from: README commands, CI script (the compose stack: test_compose.py)."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    demo = "bash scripts/setup.sh && .venv/bin/riskstream demo"
    tests = "bash scripts/setup.sh && bash scripts/test.sh"
    assert demo in readme
    assert tests in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in ci
    assert "bash scripts/test.sh" in ci
    assert "torch==2.13.0" in (ROOT / "scripts" / "setup.sh").read_text()


def test_readme_commands_read_only_what_an_earlier_command_wrote() -> None:
    """Pasted top to bottom, the Commands block must work: every data set, model or bundle a
    command reads is one an earlier command wrote (`--out`)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].rstrip() for line in block.replace("\\\n", " ").splitlines()]
    produced: list[str] = []
    checked = 0
    for line in filter(None, lines):
        words = shlex.split(line)
        outs = {w for prev, w in itertools.pairwise(words) if prev == "--out"}
        for word in words:
            if word in outs or not re.match(r"(data|models|bundles|reports)/", word):
                continue
            checked += 1
            assert any(word == p or word.startswith(p + "/") for p in produced), (
                f"README: `{line.strip()}` reads {word}, which no earlier command writes"
            )
        produced += sorted(outs)
    assert checked >= 10  # the block was found and read


def test_worker_side_and_cli_start_without_torch() -> None:
    # torch is poisoned: any import of it on these paths fails loudly.
    code = (
        "import sys; sys.modules['torch'] = None; "
        "import events, stream, export, riskstream.cli, riskstream.localstack, "
        "stream.app, stream.runtime, stream.cli, export.loader, export.score, "
        "riskstream.tools.backtest; "
        "stream.app.create_app(stream.WorkerSettings())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
