"""What `riskstream replay` and `riskstream alerts` share: broker addresses, the broker's
SSL/SASL settings (the worker's own `RISKSTREAM_*` variables), and topic checks."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Final

from riskstream.localstack.broker import redact
from riskstream.tools.exceptions import ToolError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "bootstrap_servers",
    "check_broker",
    "kafka_security",
    "partition_count",
    "quiet_kafka",
    "resolve_bootstrap",
]

#: How long a client waits for the first broker answer before the command gives up.
CONNECT_TIMEOUT_S: Final = 5.0

_SCHEMES: Final = ("kafka", "tcp", "plaintext")
_SPLIT: Final = re.compile(r"[;,\s]+")


def kafka_security() -> dict[str, Any]:
    """kafka-python arguments for SSL/SASL from the worker's settings (`stream.settings.
    KafkaSecurity`: `RISKSTREAM_SECURITY_PROTOCOL`, `RISKSTREAM_SASL_*` with the password in
    `RISKSTREAM_SASL_PASSWORD` or the file `RISKSTREAM_SASL_PASSWORD_FILE`, `RISKSTREAM_SSL_*`);
    empty for plaintext. `ToolError` in one line naming the setting when one is wrong."""
    from pydantic import ValidationError

    from stream.exceptions import StreamError
    from stream.settings import ENV_PREFIX, KafkaSecurity

    try:
        return KafkaSecurity().with_secret_files().kafka_python_config()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]).upper()
        raise ToolError(f"{ENV_PREFIX}{where}: {first['msg']}") from None
    except (StreamError, OSError) as exc:
        raise ToolError(str(exc)) from None


def quiet_kafka() -> None:
    """kafka-python logs every connection at INFO: keep a command's stderr to what matters."""
    logging.getLogger("kafka").setLevel(logging.WARNING)


def bootstrap_servers(url: str) -> str:
    """`host:port[,host:port]` for kafka-python from `kafka://host:port` (Faust's form), a bare
    `host:port`, or several of either separated by commas or semicolons.

    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> bootstrap_servers("kafka://a:1;kafka://b:2")
    'a:1,b:2'
    >>> bootstrap_servers("localhost")
    'localhost:9092'
    """
    servers = []
    for part in (p for p in _SPLIT.split(url.strip()) if p):
        scheme, sep, rest = part.partition("://")
        if not sep:
            scheme, rest = "", part
        elif scheme.lower() not in _SCHEMES:
            raise ToolError(f"broker {redact(url)!r}: expected kafka://host:port or host:port")
        rest = rest.rstrip("/")
        if "@" in rest:
            raise ToolError(f"broker {redact(url)!r}: credentials go in RISKSTREAM_SASL_* settings")
        host, colon, port = rest.rpartition(":")
        if not colon:
            host, port = rest, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ToolError(f"broker {redact(url)!r}: expected kafka://host:port or host:port")
        servers.append(f"{host}:{int(port)}")
    if not servers:
        raise ToolError("broker: empty address (expected kafka://host:port)")
    return ",".join(servers)


def resolve_bootstrap(broker: str | None, state_path: Path | None = None) -> str:
    """The bootstrap servers of `--broker`, else of the running dev stack, else an error."""
    if broker:
        return bootstrap_servers(broker)
    from riskstream.dev.stack import dev_addresses, resolve_state_path

    found = dev_addresses(state_path)
    if found is None:
        raise ToolError(
            "no broker: pass --broker kafka://host:port, or start the local stack with "
            f"`riskstream dev up` (no running stack recorded in {resolve_state_path(state_path)})"
        )
    return bootstrap_servers(found[0])


def _admin(bootstrap: str, timeout_s: float, security: dict[str, Any] | None) -> Any:
    """A connected kafka-python admin client; `ToolError` in one line when no broker answers."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    budget_ms = int(timeout_s * 1000)
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="riskstream-tools",
            bootstrap_timeout_ms=budget_ms,
            request_timeout_ms=budget_ms,
            **(kafka_security() if security is None else security),
        )
    except (KafkaError, OSError) as exc:
        raise ToolError(f"cannot reach the broker at {bootstrap} ({exc})") from None


def check_broker(
    bootstrap: str, timeout_s: float = CONNECT_TIMEOUT_S, security: dict[str, Any] | None = None
) -> None:
    """`ToolError` in one line unless a broker at `bootstrap` answers within `timeout_s`: what a
    command checks before it starts a client that would retry and log at length instead."""
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # its retries would log each refused connection
    try:
        _admin(bootstrap, timeout_s, security).close()
    finally:
        kafka_log.setLevel(level)


def partition_count(
    bootstrap: str,
    topic: str,
    timeout_s: float = CONNECT_TIMEOUT_S,
    security: dict[str, Any] | None = None,
) -> int:
    """How many partitions `topic` has; `ToolError` when the broker does not answer or the
    topic does not exist.

    `security`: kafka-python SSL/SASL arguments (default: `kafka_security()`).

    Asked through the admin client on purpose: a producer's or consumer's metadata request
    for an unknown topic makes Tansu (and brokers with auto-create on) create it with the
    default partition count, behind the worker's back.
    """
    from kafka.errors import KafkaError

    admin = _admin(bootstrap, timeout_s, security)
    try:
        described: list[dict[str, Any]] = admin.describe_topics([topic])
    except (KafkaError, OSError) as exc:
        raise ToolError(f"metadata for topic {topic!r} from {bootstrap} failed ({exc})") from None
    finally:
        admin.close()
    for info in described:
        if info.get("name") == topic and info.get("error_code", 0) == 0:
            partitions = len(info.get("partitions") or [])
            if partitions:
                return partitions
    raise ToolError(
        f"topic {topic!r} does not exist on {bootstrap} "
        "(`riskstream dev up` creates the worker's topics)"
    )
