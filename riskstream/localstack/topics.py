"""Create Kafka topics up front, with their final partition counts.

Tansu does not implement CreatePartitions completely, and a Faust worker or a producer that
auto-creates a topic would give it the broker's default count: so every topic is created
here, before anything uses it, and this waits until metadata shows each one with all its
partitions led.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from riskstream.localstack.exceptions import TopicSetupError

__all__ = ["TOPIC_ALREADY_EXISTS", "create_topics", "describe_partition_counts"]

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
_POLL_S = 0.1


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    replication: int = 1,
    timeout_s: float = 30.0,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create `{name: partitions}` on the broker at `bootstrap` and wait until they are usable.

    Idempotent: a topic that already exists with the same partition count is fine; one that
    exists with another count is a `TopicSetupError` (it cannot be grown reliably on Tansu).
    `configs` (topic configs, e.g. `retention.ms`) apply to every topic created.
    """
    if not topics:
        return
    for name, partitions in topics.items():
        if partitions < 1:
            raise TopicSetupError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
    # Imported here: kafka-python is heavy to import and only needed once a broker runs.
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from stream.kafka_clients import kafka_config, plaintext

    deadline = time.monotonic() + timeout_s
    budget_ms = max(1000, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            **kafka_config(bootstrap, plaintext(), client_id="riskstream-localstack-topics",
                           request_timeout_ms=budget_ms, bootstrap_timeout_ms=budget_ms)
        )  # fmt: skip
    except (KafkaError, OSError) as exc:
        raise TopicSetupError(f"cannot reach the broker at {bootstrap}: {exc!r}") from exc
    try:
        request = {
            name: {
                "num_partitions": partitions,
                "replication_factor": replication,
                "configs": dict(configs or {}),
            }
            for name, partitions in topics.items()
        }
        try:
            response = admin.create_topics(request, timeout_ms=budget_ms, raise_errors=False)
        except (KafkaError, OSError) as exc:
            raise TopicSetupError(f"CreateTopics on {bootstrap} failed: {exc!r}") from exc
        _check_create_response(response)
        counts = _wait_for_metadata(admin, topics, deadline)
    finally:
        admin.close()
    wrong = {n: (counts[n], p) for n, p in topics.items() if counts[n] != p}
    if wrong:
        detail = ", ".join(f"{n}: has {have}, wanted {want}" for n, (have, want) in wrong.items())
        raise TopicSetupError(f"topics exist with other partition counts ({detail})")
    log.info("topics ready on %s: %s", bootstrap, dict(topics))


def describe_partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """`{topic: partition count}` for the named topics that exist (a missing one is absent)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from stream.kafka_clients import kafka_config, plaintext

    try:
        config = kafka_config(bootstrap, plaintext(), client_id="riskstream-localstack-topics")
        with KafkaAdminClient(**config) as admin:
            return {
                name: len(info.get("partitions") or [])
                for name, info in _describe(admin, names).items()
                if info.get("error_code", 0) == 0
            }
    except (KafkaError, OSError) as exc:
        raise TopicSetupError(f"Metadata from {bootstrap} failed: {exc!r}") from exc


def _check_create_response(response: Mapping[str, Any]) -> None:
    failed = []
    for result in response.get("topics", []):
        code = result.get("error_code", 0)
        if code not in (0, TOPIC_ALREADY_EXISTS):
            failed.append(f"{result.get('name')}: error {code} {result.get('error_message')}")
    if failed:
        raise TopicSetupError("CreateTopics refused: " + "; ".join(failed))


def _describe(admin: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    described: list[dict[str, Any]] = admin.describe_topics(names)
    return {info["name"]: info for info in described}


def _is_ready(info: Mapping[str, Any] | None) -> bool:
    if info is None or info.get("error_code", 0) != 0:
        return False
    partitions = info.get("partitions") or []
    return bool(partitions) and all(
        p.get("error_code", 0) == 0 and p.get("leader_id", -1) >= 0 for p in partitions
    )


def _wait_for_metadata(admin: Any, topics: Mapping[str, int], deadline: float) -> dict[str, int]:
    """Poll Metadata until every topic is there with a leader for each partition."""
    from kafka.errors import KafkaError

    names = list(topics)
    pending: list[str] = names
    last_error: BaseException | None = None
    while True:
        try:
            described = _describe(admin, names)
            pending = [n for n in names if not _is_ready(described.get(n))]
            if not pending:
                return {n: len(described[n]["partitions"]) for n in names}
        except (KafkaError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TopicSetupError(
                f"topics not ready in metadata in time: {pending} (last error: {last_error!r})"
            ) from last_error
        time.sleep(_POLL_S)
