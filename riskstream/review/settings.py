"""The review service's settings: flags, else `RISKSTREAM_REVIEW_*` / `RISKSTREAM_DATABASE_URL`
variables, else the defaults. Secrets (the database URL's password, the session secret) come
from the environment only, never from flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_PORT", "ENV", "ReviewSettings"]

DEFAULT_PORT: Final = 8470
ENV: Final = "RISKSTREAM_REVIEW_"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"{ENV}{name}", "").strip() or default


@dataclass
class ReviewSettings:
    """Where the service listens, what it reads and writes."""

    database_url: str
    bootstrap: str
    host: str = field(default_factory=lambda: _env("HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("PORT", str(DEFAULT_PORT))))
    users_file: Path = field(
        default_factory=lambda: Path(_env("USERS_FILE", ".riskstream/review-users"))
    )
    alerts_topic: str = field(default_factory=lambda: _env("ALERTS_TOPIC", "alerts"))
    decisions_topic: str = field(default_factory=lambda: _env("DECISIONS_TOPIC", "decisions"))
    dlq_topic: str = field(default_factory=lambda: _env("DLQ_TOPIC", "alerts.dlq"))
    group: str = field(default_factory=lambda: _env("GROUP", "riskstream-review"))
    #: Signs session cookies; a random one per start when unset (sign-ins then end at restart).
    secret: str | None = field(default_factory=lambda: os.environ.get(f"{ENV}SECRET") or None)
    https_only: bool = field(default_factory=lambda: _env("HTTPS_ONLY", "0") in ("1", "true"))
    session_max_age_s: int = 8 * 3600
    consume: bool = True
    fetch_max_wait_ms: int = 100
