"""Whether to draw progress bars and colours: only on a terminal. A bar redraws itself with
carriage returns, which a log file or CI keeps as one frame per update, and colours are
escape codes there; elsewhere each step writes one line when it ends."""

from __future__ import annotations

import sys
from typing import IO, Any

__all__ = ["bars_wanted", "is_terminal"]


def is_terminal(stream: IO[Any] | None) -> bool:
    """Whether `stream` is a terminal (False for None, a file, a pipe, a captured stream).

    >>> import io
    >>> is_terminal(io.StringIO())
    False
    """
    isatty = getattr(stream, "isatty", None)
    return callable(isatty) and bool(isatty())


def bars_wanted(enabled: bool) -> bool:
    """Whether to draw a progress bar: asked for, and stderr (where bars go) is a terminal."""
    return enabled and is_terminal(sys.stderr)
