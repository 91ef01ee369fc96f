"""Check an output path before any work: every writing command calls `check_output` first, so
a bad `--out` is refused in a moment, naming the path the user gave, not after minutes of
reading (and not as a temporary file's name)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from events.exceptions import UnwritableOutput

__all__ = ["check_output"]


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")  # pragma: no cover - "/" always exists


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_output(path: Path, what: str, *, folder: bool = False) -> None:
    """Refuse `path` unless this process can write it: a file (or, with `folder`, a folder)
    that exists with the right kind, or whose nearest existing parent is a folder this process
    can create files in — tried, not guessed from permission bits (root passes those
    everywhere, /proc still refuses). Creates nothing that stays.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     check_output(Path(d) / "new" / "scores.jsonl", "--out")
    ...     (Path(d) / "new").exists()
    False
    >>> try:
    ...     check_output(Path("/proc/nope/x.jsonl"), "--out")
    ... except UnwritableOutput as exc:
    ...     print(exc)
    --out /proc/nope/x.jsonl: cannot write in /proc (No such file or directory)
    """
    shown = f"{what} {path}"
    if path.exists():
        if folder and not path.is_dir():
            raise UnwritableOutput(f"{shown}: is a file, a folder is wanted")
        if not folder and path.is_dir():
            raise UnwritableOutput(f"{shown}: is a folder, a file is wanted")
        if not folder:
            try:  # opened for writing, not truncated: the file stays as it is
                os.close(os.open(path, os.O_WRONLY))
            except OSError as exc:
                raise UnwritableOutput(f"{shown}: cannot write it ({_why(exc)})") from None
    target = path if folder and path.is_dir() else path.absolute().parent
    where = target if target.exists() else _existing_ancestor(target)
    if not where.is_dir():
        raise UnwritableOutput(f"{shown}: {where} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=where, prefix=".riskstream-check-"))
    except OSError as exc:
        raise UnwritableOutput(f"{shown}: cannot write in {where} ({_why(exc)})") from None
