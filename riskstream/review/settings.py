"""The review service's settings: flags, else `RISKSTREAM_REVIEW_*` / `RISKSTREAM_DATABASE_URL`
variables, else the defaults. Secrets (the database URL's password, the session secret) come
from the environment only, never from flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from riskstream.review.exceptions import ReviewError
from riskstream.review.throttle import LoginLimits, Network, parse_networks
from stream.exceptions import SettingsError
from stream.kafka_clients import KafkaSecurity, security_from_env

__all__ = ["DEFAULT_PORT", "ENV", "ReviewSettings"]

DEFAULT_PORT: Final = 8470
ENV: Final = "RISKSTREAM_REVIEW_"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"{ENV}{name}", "").strip() or default


def _kafka_security() -> KafkaSecurity:
    """The broker's SSL/SASL settings: the worker's own `RISKSTREAM_SECURITY_PROTOCOL`,
    `RISKSTREAM_SASL_*`, `RISKSTREAM_SSL_*` (one line naming a bad one)."""
    try:
        return security_from_env()
    except (SettingsError, OSError) as exc:
        raise ReviewError(str(exc)) from None


def _number(name: str, default: str) -> float:
    """A non-negative number from `RISKSTREAM_REVIEW_<name>`; a bad one is one line naming it."""
    raw = _env(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ReviewError(f"{ENV}{name}: {raw!r} is not a number ≥ 0")
    return value


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
    #: Sign-in lockout: this many failures per user name (and per client address) within the
    #: window lock that name (address) out for `login_lockout_s`; 0: no limit of that kind.
    login_max_failures: int = field(default_factory=lambda: int(_number("LOGIN_MAX_FAILURES", "5")))
    login_max_failures_per_address: int = field(
        default_factory=lambda: int(_number("LOGIN_MAX_FAILURES_PER_ADDRESS", "20"))
    )
    login_window_s: float = field(default_factory=lambda: _number("LOGIN_WINDOW_S", "300"))
    login_lockout_s: float = field(default_factory=lambda: _number("LOGIN_LOCKOUT_S", "900"))
    #: Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For is believed;
    #: none by default: the client address is the connection's peer.
    trusted_proxies: str = field(default_factory=lambda: _env("TRUSTED_PROXIES", ""))
    #: The allow / deny lists file the console's list action on a case edits (the one the
    #: worker's rules file names; docs/lists.md); none: the action is not offered.
    lists_file: Path | None = field(
        default_factory=lambda: Path(v) if (v := _env("LISTS_FILE", "")) else None
    )
    consume: bool = True
    fetch_max_wait_ms: int = 100
    #: SSL/SASL for every Kafka client of the service (`stream.kafka_clients`).
    kafka: KafkaSecurity = field(default_factory=_kafka_security)

    def login_limits(self) -> LoginLimits:
        """The sign-in rate limit and lockout."""
        return LoginLimits(
            max_failures=self.login_max_failures,
            max_failures_per_address=self.login_max_failures_per_address,
            window_s=self.login_window_s,
            lockout_s=self.login_lockout_s,
        )

    def proxies(self) -> tuple[Network, ...]:
        """The trusted proxies as networks; a bad entry is one line naming the setting."""
        try:
            return parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ReviewError(f"{ENV}TRUSTED_PROXIES: {exc}") from None
