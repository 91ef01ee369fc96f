"""The review service's settings: flags, else `RISKSTREAM_REVIEW_*` / `RISKSTREAM_DATABASE_URL`
variables, else the defaults — pydantic-settings, as the worker's (`stream.settings`). Secrets
(the database URL's password, the session secret) come from the environment only, never from
flags, and never show in a repr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from riskstream.review.exceptions import ReviewError
from riskstream.review.throttle import LoginLimits, Network, parse_networks
from stream.exceptions import SettingsError
from stream.kafka_clients import KafkaSecurity, security_from_env

__all__ = ["DEFAULT_PORT", "ENV", "ReviewSettings"]

DEFAULT_PORT: Final = 8470
ENV: Final = "RISKSTREAM_REVIEW_"


def _kafka_security() -> KafkaSecurity:
    """The broker's SSL/SASL settings: the worker's own `RISKSTREAM_SECURITY_PROTOCOL`,
    `RISKSTREAM_SASL_*`, `RISKSTREAM_SSL_*` (one line naming a bad one)."""
    try:
        return security_from_env()
    except (SettingsError, OSError) as exc:
        raise ReviewError(str(exc)) from None


def _one_line(exc: ValidationError) -> str:
    """The first problem, naming the variable (a flag's value is named the same way)."""
    first = exc.errors()[0]
    name = f"{ENV}{str(first['loc'][0]).upper()}" if first["loc"] else ENV.rstrip("_")
    return f"{name}: {first.get('input')!r}: {first['msg']}"


class ReviewSettings(BaseSettings):
    """Where the service listens, what it reads and writes. Arguments win over the
    environment; a bad value is a `ReviewError` of one line naming the variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV, extra="forbid", validate_assignment=True, env_ignore_empty=True
    )

    database_url: str = Field(repr=False)  # may carry a password
    bootstrap: str
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    users_file: Path = Path(".riskstream/review-users")
    alerts_topic: str = "alerts"
    #: A shadow model's would-be alerts (`worker --shadow-bundle`), stored apart for the
    #: Precision page's live-vs-shadow section; "" (or "-"): not read.
    shadow_alerts_topic: str = "alerts.shadow"
    decisions_topic: str = "decisions"
    dlq_topic: str = "alerts.dlq"
    group: str = "riskstream-review"
    #: Signs session cookies; a random one per start when unset (sign-ins then end at restart).
    secret: SecretStr | None = None
    https_only: bool = False
    session_max_age_s: int = Field(default=8 * 3600, gt=0)
    #: Sign-in lockout: this many failures per user name (and per client address) within the
    #: window lock that name (address) out for `login_lockout_s`; 0: no limit of that kind.
    login_max_failures: int = Field(default=5, ge=0)
    login_max_failures_per_address: int = Field(default=20, ge=0)
    login_window_s: float = Field(default=300.0, ge=0)
    login_lockout_s: float = Field(default=900.0, ge=0)
    #: Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For is believed;
    #: none by default: the client address is the connection's peer.
    trusted_proxies: str = ""
    #: The allow / deny lists file the console's list action on a case edits (the one the
    #: worker's rules file names; docs/lists.md); none: the action is not offered.
    lists_file: Path | None = None
    consume: bool = True
    fetch_max_wait_ms: int = Field(default=100, ge=1)
    #: SSL/SASL for every Kafka client of the service (`stream.kafka_clients`).
    kafka: KafkaSecurity = Field(default_factory=_kafka_security, exclude=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ReviewError(_one_line(exc)) from None

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
