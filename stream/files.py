"""Small files the services read while running, and the private ones they write.

`ReloadingFile` keeps a file's parsed content and parses it again when the file's modification
time or size changes: users, API keys, lists are added or revoked without a restart.
`write_private` replaces a file atomically with mode 0600 (secrets at rest: hashes, keys).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "names"
>>> names = ReloadingFile(path, lambda p: p.read_text().split(), missing=[])
>>> names.current()
[]
>>> write_private(path, "ada grace\\n")
>>> names.current(), oct(path.stat().st_mode & 0o777)
(['ada', 'grace'], '0o600')
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["ReloadingFile", "file_stamp", "write_private"]

_T = TypeVar("_T")


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size), or None when there is no such file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


class ReloadingFile(Generic[_T]):
    """`parse(path)`, cached until the file's stamp changes; `missing` while there is no file.
    A parse error propagates (the caller decides: refuse the request, or keep the old)."""

    def __init__(self, path: Path, parse: Callable[[Path], _T], *, missing: _T) -> None:
        self.path = path
        self._parse = parse
        self._missing = missing
        self._stamp: tuple[int, int] | None = None
        self._value = missing
        self._read = False

    def current(self) -> _T:
        """The content, fresh from the file."""
        stamp = file_stamp(self.path)
        if not self._read or stamp != self._stamp:
            self._value = self._missing if stamp is None else self._parse(self.path)
            self._stamp, self._read = stamp, True
        return self._value


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8, mode 0600) atomically: a reader sees the old file or
    the new one, never half of it; a failed write leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
