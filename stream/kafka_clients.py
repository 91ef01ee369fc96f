"""Every Kafka client the project opens gets its address and its security here, and only here.

The worker (Faust, on aiokafka), the review service (aiokafka), the tools (`replay`, `alerts`,
kafka-python), the labels export and the benchmarks (kafka-python, confluent-kafka) all build
their client's settings with `kafka_config(bootstrap, security, flavor, **options)`: the bootstrap
servers and SSL/SASL from one `stream.settings.KafkaSecurity` (the `RISKSTREAM_SECURITY_PROTOCOL`,
`RISKSTREAM_SASL_*` and `RISKSTREAM_SSL_*` variables, read by `security_from_env()`), in the
dialect of the client library, plus the caller's own options. So the same variables reach the
same broker from every command, and a client that ignores them cannot be written by accident.

>>> plain = KafkaSecurity.model_construct()  # PLAINTEXT, not read from the environment
>>> kafka_config("kafka://a:1,b:2", plain, "aiokafka", client_id="x")
{'bootstrap_servers': ['a:1', 'b:2'], 'client_id': 'x'}
>>> kafka_config("a:1", plain, "confluent", **{"linger.ms": 5})
{'bootstrap.servers': 'a:1', 'linger.ms': 5}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, Literal

from events.redaction import redact
from stream.exceptions import SettingsError
from stream.settings import ENV_PREFIX, KafkaSecurity

__all__ = [
    "BrokerAddressError",
    "Flavor",
    "KafkaSecurity",
    "bootstrap_servers",
    "faust_credentials",
    "kafka_config",
    "plaintext",
    "security_from_env",
    "ssl_context",
]

#: The client library the settings are for: kafka-python and aiokafka share their argument
#: names; confluent-kafka (librdkafka) takes dotted keys and file paths.
Flavor = Literal["kafka-python", "aiokafka", "confluent"]

_SCHEMES: Final = ("kafka", "tcp", "plaintext")
_SPLIT: Final = re.compile(r"[;,\s]+")


class BrokerAddressError(SettingsError):
    """A broker address that cannot be used (one line naming it, its password hidden)."""


def bootstrap_servers(url: str) -> str:
    """`host:port[,host:port]` from `kafka://host:port` (Faust's form), a bare `host:port`, or
    several of either separated by commas or semicolons.

    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> bootstrap_servers("kafka://a:1;kafka://b:2")
    'a:1,b:2'
    >>> bootstrap_servers("localhost")
    'localhost:9092'
    """
    expected = f"broker {redact(url)!r}: expected kafka://host:port or host:port"
    servers = []
    for part in (p for p in _SPLIT.split(url.strip()) if p):
        scheme, sep, rest = part.partition("://")
        if not sep:
            scheme, rest = "", part
        elif scheme.lower() not in _SCHEMES:
            raise BrokerAddressError(expected)
        rest = rest.rstrip("/")
        if "@" in rest:
            raise BrokerAddressError(
                f"broker {redact(url)!r}: credentials go in RISKSTREAM_SASL_* settings"
            )
        host, colon, port = rest.rpartition(":")
        if not colon:
            host, port = rest, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BrokerAddressError(expected)
        servers.append(f"{host}:{int(port)}")
    if not servers:
        raise BrokerAddressError("broker: empty address (expected kafka://host:port)")
    return ",".join(servers)


def plaintext() -> KafkaSecurity:
    """No SSL, no SASL, whatever the environment says: for the embedded local stack only."""
    return KafkaSecurity.model_construct()


def security_from_env() -> KafkaSecurity:
    """The broker's SSL/SASL settings from the `RISKSTREAM_*` variables, secrets read from their
    files; `SettingsError` in one line naming the setting when one is wrong."""
    from pydantic import ValidationError

    try:
        return KafkaSecurity().with_secret_files()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]).upper()
        raise SettingsError(f"{ENV_PREFIX}{where}: {first['msg']}") from None


def ssl_context(security: KafkaSecurity) -> Any:
    """An `ssl.SSLContext` for SSL and SASL_SSL (None for the others); `SettingsError` naming
    the setting and the file when a CA, certificate or key cannot be loaded."""
    if "SSL" not in security.security_protocol:
        return None
    import ssl

    def failed(setting: str, path: Path, exc: Exception) -> SettingsError:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return SettingsError(f"{ENV_PREFIX}{setting.upper()} {path}: {why}")

    cafile, certfile, keyfile = security.ssl_cafile, security.ssl_certfile, security.ssl_keyfile
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise failed("ssl_cafile", cafile or Path("(system)"), exc) from None
    if certfile:
        try:
            context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            raise failed("ssl_certfile", certfile, exc) from None
    return context


def _password(security: KafkaSecurity) -> str:
    secret = security.sasl_password
    return secret.get_secret_value() if secret else ""


def _security_config(security: KafkaSecurity, flavor: Flavor) -> dict[str, Any]:
    protocol = security.security_protocol
    if protocol == "PLAINTEXT":
        return {}
    sasl = protocol.startswith("SASL")
    if flavor == "confluent":
        config: dict[str, Any] = {"security.protocol": protocol}
        if "SSL" in protocol:
            files = (("ssl.ca.location", security.ssl_cafile),
                     ("ssl.certificate.location", security.ssl_certfile),
                     ("ssl.key.location", security.ssl_keyfile))  # fmt: skip
            config.update({key: str(path) for key, path in files if path})
        if sasl:
            config["sasl.mechanism"] = security.sasl_mechanism
            config["sasl.username"] = security.sasl_username or ""
            config["sasl.password"] = _password(security)
        return config
    config = {"security_protocol": protocol}
    if "SSL" in protocol:
        config["ssl_context"] = ssl_context(security)
    if sasl:
        config["sasl_mechanism"] = security.sasl_mechanism
        config["sasl_plain_username"] = security.sasl_username or ""
        config["sasl_plain_password"] = _password(security)
    return config


def kafka_config(
    bootstrap: str, security: KafkaSecurity, flavor: Flavor = "kafka-python", /, **options: Any
) -> dict[str, Any]:
    """The settings of one Kafka client: its bootstrap servers (`bootstrap`: any form
    `bootstrap_servers` takes), the SSL/SASL of `security` in the dialect of `flavor`, then the
    caller's `options` (client id, acks, timeouts; dotted keys for confluent-kafka)."""
    servers = bootstrap_servers(bootstrap)
    config: dict[str, Any] = (
        {"bootstrap.servers": servers}
        if flavor == "confluent"
        else {"bootstrap_servers": servers.split(",")}
    )
    config.update(_security_config(security, flavor))
    config.update(options)
    return config


def faust_credentials(security: KafkaSecurity) -> Any:
    """The same settings as Faust's `broker_credentials` (None for plaintext)."""
    if security.security_protocol == "PLAINTEXT":
        return None
    import faust

    context = ssl_context(security)
    if security.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=security.sasl_username or "",
            password=_password(security),
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)
