"""Secrets out of what a person reads: URL passwords hidden in logs, errors and reprs.

Down here so that every layer can use it: the stream (broker addresses), the product (the
review service's database URL, the tools' broker URL) and the workshop (the local stack's
storage URLs, which Tansu echoes in its errors).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["redact"]

# user:password@ inside URLs (the user may be empty).
_URL_PASSWORD: Final = re.compile(r"(://[^:/@\s]*):[^@\s]+@")


def redact(text: str) -> str:
    """`text` with every URL password replaced by ***, for logs, errors and reprs.

    >>> redact("postgres://tansu:s3cret@db:5432/x and redis://:pw@h:6379")
    'postgres://tansu:***@db:5432/x and redis://:***@h:6379'
    """
    return _URL_PASSWORD.sub(r"\1:***@", text)
