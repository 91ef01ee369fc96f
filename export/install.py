"""Put a finished bundle folder in place: a new one is renamed in, an existing one swapped.

`export --force` builds the new bundle in a hidden folder beside `--out`, then `swap_in` puts
it there. On Linux the two folders trade places in one atomic `renameat2(RENAME_EXCHANGE)`: a
worker starting or polling meanwhile sees the old bundle or the new one, never no bundle;
then the old one (now at the hidden name) is removed. Where the call is missing (not Linux, an
old libc, a file system without it) the old folder is renamed aside and the new one renamed in:
two renames, with a moment without a bundle between them.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Final

__all__ = ["exchange", "swap_in"]

log = logging.getLogger(__name__)

_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths `a` and `b` (both must exist); False where the system cannot
    (then nothing changed), `OSError` for any other failure."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def swap_in(new: Path, out: Path) -> None:
    """Make the folder `new` the bundle at `out` (same parent folder), replacing what is there;
    the old bundle is removed afterwards, and no other folder is left behind."""
    if not out.exists() and not out.is_symlink():
        new.rename(out)
        return
    if exchange(new, out):
        shutil.rmtree(new)  # the old bundle, now at the new one's hidden name
        return
    log.warning("%s: no atomic exchange here; moving the old bundle aside first", out)
    aside = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(aside)
    try:
        new.rename(out)
    except OSError:
        aside.rename(out)  # put the old one back
        raise
    shutil.rmtree(aside)
