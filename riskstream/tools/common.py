"""What `riskstream replay` and `riskstream alerts` share: broker addresses, the broker's
SSL/SASL settings (the worker's own `RISKSTREAM_*` variables; every client is built by
`stream.kafka_clients`), and topic checks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from riskstream.stackstate import dev_addresses, resolve_state_path
from riskstream.tools.exceptions import ToolError
from stream import kafka_clients
from stream.exceptions import StreamError
from stream.kafka_clients import BrokerAddressError, KafkaSecurity, kafka_config, security_from_env

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


def kafka_security() -> KafkaSecurity:
    """The broker's SSL/SASL settings, the worker's own (`stream.settings.KafkaSecurity`:
    `RISKSTREAM_SECURITY_PROTOCOL`, `RISKSTREAM_SASL_*` with the password in
    `RISKSTREAM_SASL_PASSWORD` or the file `RISKSTREAM_SASL_PASSWORD_FILE`, `RISKSTREAM_SSL_*`),
    for `stream.kafka_clients.kafka_config`; `ToolError` in one line naming the setting when one
    is wrong."""
    try:
        return security_from_env()
    except (StreamError, OSError) as exc:
        raise ToolError(str(exc)) from None


def quiet_kafka() -> None:
    """kafka-python logs every connection at INFO: keep a command's stderr to what matters."""
    logging.getLogger("kafka").setLevel(logging.WARNING)


def bootstrap_servers(url: str) -> str:
    """`stream.kafka_clients.bootstrap_servers`, its error a `ToolError`.

    >>> bootstrap_servers("kafka://a:1;kafka://b:2")
    'a:1,b:2'
    """
    try:
        return kafka_clients.bootstrap_servers(url)
    except BrokerAddressError as exc:
        raise ToolError(str(exc)) from None


def resolve_bootstrap(broker: str | None, state_path: Path | None = None) -> str:
    """The bootstrap servers of `--broker`, else of the running dev stack, else an error."""
    if broker:
        return bootstrap_servers(broker)
    found = dev_addresses(state_path)
    if found is None:
        raise ToolError(
            "no broker: pass --broker kafka://host:port, or start the local stack with "
            f"`riskstream dev up` (no running stack recorded in {resolve_state_path(state_path)})"
        )
    return bootstrap_servers(found[0])


def _admin(bootstrap: str, timeout_s: float, security: KafkaSecurity | None) -> Any:
    """A connected kafka-python admin client; `ToolError` in one line when no broker answers."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    budget_ms = int(timeout_s * 1000)
    try:
        config = kafka_config(
            bootstrap, kafka_security() if security is None else security, "kafka-python",
            client_id="riskstream-tools", bootstrap_timeout_ms=budget_ms,
            request_timeout_ms=budget_ms,
        )  # fmt: skip
        return KafkaAdminClient(**config)
    except (KafkaError, OSError) as exc:
        raise ToolError(f"cannot reach the broker at {bootstrap} ({exc})") from None


def check_broker(
    bootstrap: str, timeout_s: float = CONNECT_TIMEOUT_S, security: KafkaSecurity | None = None
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
    security: KafkaSecurity | None = None,
) -> int:
    """How many partitions `topic` has; `ToolError` when the broker does not answer or the
    topic does not exist.

    `security`: the broker's SSL/SASL settings (default: `kafka_security()`).

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
