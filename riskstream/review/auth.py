"""The console's users: a file of `name:hash` lines, hashes from hashlib's scrypt (no plaintext).

A hash reads `scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>`. `riskstream review add-user`
adds or replaces a user, reading the password from a prompt or stdin, never from argv.

>>> h = hash_password("correct horse", n=2**10)
>>> verify_password("correct horse", h), verify_password("wrong", h)
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Final

from riskstream.review.exceptions import AuthError
from stream.files import ReloadingFile, write_private

__all__ = [
    "USERS_FILE_ENV",
    "UserStore",
    "ensure_users_file",
    "hash_password",
    "set_user",
    "valid_username",
    "verify_password",
]

USERS_FILE_ENV: Final = "RISKSTREAM_REVIEW_USERS_FILE"
_N: Final = 2**14
_R: Final = 8
_P: Final = 1
_USERNAME: Final = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD: Final = 8
_HEADER: Final = "# riskstream review users: name:scrypt hash (riskstream review add-user)\n"
# Checked when the user is unknown, so that a wrong name costs what a wrong password does.
_DUMMY: Final = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


def valid_username(name: str) -> bool:
    """Letters, digits and `._@-`, 1 to 64 of them."""
    return bool(_USERNAME.match(name))


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """A salted scrypt hash of `password` in the users file's form."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(key, validate=True)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=2**26,
            dklen=len(want),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def _read(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return users
    except OSError as exc:
        raise AuthError(f"cannot read the users file {path}: {exc.strerror}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not valid_username(name) or not stored.startswith("scrypt$"):
            raise AuthError(f"{path}:{lineno}: expected `name:scrypt$...` (a hashed password)")
        users[name] = stored
    return users


class UserStore:
    """The users file, re-read when it changes (users can be added while the console runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: ReloadingFile[dict[str, str]] = ReloadingFile(path, _read, missing={})

    def users(self) -> dict[str, str]:
        """{name: hash}, fresh from the file."""
        return self._file.current()

    def check(self, name: str, password: str) -> bool:
        """True when `name` exists and `password` is theirs."""
        stored = self.users().get(name)
        ok = verify_password(password, stored if stored is not None else _DUMMY)
        return ok and stored is not None


def ensure_users_file(path: Path) -> int:
    """Create an empty users file (mode 0600) where there is none; the number of users in it.
    The console runs with none: every sign-in is refused until `review add-user` adds one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_HEADER)
    return len(_read(path))


def set_user(path: Path, name: str, password: str) -> bool:
    """Add `name` (or replace their password) in the users file (mode 0600); True when new."""
    if not valid_username(name):
        raise AuthError("user name: letters, digits and ._@- only, 1 to 64 characters")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password: at least {MIN_PASSWORD} characters")
    users = _read(path)
    new = name not in users
    users[name] = hash_password(password)
    write_private(path, _HEADER + "".join(f"{u}:{h}\n" for u, h in sorted(users.items())))
    return new
