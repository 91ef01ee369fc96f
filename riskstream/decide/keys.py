"""API keys of the decision service: a file of `name:sha256$<hex>` lines (no key in clear).

Keys are 256-bit random tokens (`riskstream decide add-key` makes one and prints it once), so a
plain SHA-256 is enough at rest: there is nothing to guess a token from, and checking costs
microseconds, not the scrypt of a password. The file is re-read when it changes: a key is added,
rotated (a new line, then the old one removed) or revoked without a restart.

>>> h = hash_key("k" * 43)
>>> h.startswith("sha256$"), len(h)
(True, 71)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Final

from riskstream.decide.exceptions import ApiKeyError
from stream.files import ReloadingFile, write_private

__all__ = ["KEYS_FILE_ENV", "KeyStore", "add_key", "hash_key", "new_key"]

KEYS_FILE_ENV: Final = "RISKSTREAM_DECIDE_KEYS_FILE"
_NAME: Final = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_HASH: Final = re.compile(r"^sha256\$[0-9a-f]{64}$")
_HEADER: Final = "# riskstream decide API keys: name:sha256$hex (riskstream decide add-key)\n"


def hash_key(key: str) -> str:
    """The form a key is kept in."""
    return "sha256$" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _read(path: Path) -> dict[str, str]:
    """{hash: name}; a missing file holds no key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ApiKeyError(f"cannot read the keys file {path}: {exc.strerror}") from None
    keys: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not _NAME.match(name) or not _HASH.match(stored):
            raise ApiKeyError(f"{path}:{lineno}: expected `name:sha256$<64 hex>` (a hashed key)")
        keys[stored] = name
    return keys


class KeyStore:
    """The keys file, re-read when it changes (`stream.files.ReloadingFile`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: ReloadingFile[dict[str, str]] = ReloadingFile(path, _read, missing={})

    def keys(self) -> dict[str, str]:
        """{hash: name}, fresh from the file."""
        return self._file.current()

    def check(self, key: str) -> str | None:
        """The name of `key`, or None when it is not a key of the file."""
        presented = hash_key(key)
        found = None
        for stored, name in self.keys().items():  # compare with every key: no early exit
            if hmac.compare_digest(stored, presented):
                found = name
        return found


def add_key(path: Path, name: str) -> str:
    """Add a new key named `name` to the file (mode 0600) and return it (shown once). An older
    key of that name stays valid until removed: that is how a key is rotated."""
    if not _NAME.match(name):
        raise ApiKeyError("key name: letters, digits and ._@- only, 1 to 64 characters")
    key = new_key()
    existing = ""
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text(encoding="utf-8")
    _read(path)  # refuse to append to a file that is already broken
    if existing and not existing.endswith("\n"):
        existing += "\n"
    write_private(path, (existing or _HEADER) + f"{name}:{hash_key(key)}\n")
    return key
