"""`riskstream review`: one process with three tasks.

Its Kafka clients are built by `stream.kafka_clients`, with the broker's SSL/SASL settings (the
worker's `RISKSTREAM_SECURITY_PROTOCOL`, `RISKSTREAM_SASL_*`, `RISKSTREAM_SSL_*`).

- the **alert consumer** (aiokafka, consumer group `riskstream-review`): each alert is validated
  against the alert contract and stored (idempotent on `alert_id`); a message that breaks the
  contract goes to the dead-letter topic (`alerts.dlq`) with its reason in the headers. Offsets
  are committed after a batch is stored: at-least-once, and the redelivered alerts change nothing.
  The same consumer reads a shadow model's would-be alerts (`alerts.shadow`): validated the same
  way, stored apart (`shadow_alerts`, no case) for the Precision page's live-vs-shadow section.
- the **decision publisher**: decisions are written to PostgreSQL first (the outbox) and put on
  the `decisions` topic (key = user_id) by this task, woken by each decision and every few
  seconds, so a decision made while the broker is away goes out once it is back.
- the **console** (uvicorn serving `riskstream.review.web`), on 127.0.0.1 unless configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from psycopg_pool import AsyncConnectionPool

from events import InvalidAlert, parse_alert
from events.redaction import redact
from riskstream.review import store
from riskstream.review.auth import UserStore
from riskstream.review.exceptions import ReviewError
from riskstream.review.migrate import migrate
from riskstream.review.settings import ReviewSettings
from riskstream.review.throttle import SignInThrottle
from riskstream.review.web import ConsoleState, ReviewMetrics, create_app
from stream.dlq import DeadLetter, dead_letter_of
from stream.kafka_clients import kafka_config

__all__ = ["ReviewService", "alert_dead_letter", "handle_alert"]

log = logging.getLogger(__name__)

_PUBLISH_EVERY_S: Final = 5.0
_DLQ_MAX_BYTES: Final = 65536


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handlers: the service's stop() ends it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


def alert_dead_letter(
    exc: InvalidAlert,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """The dead letter of an alert that breaks the contract: built by `stream.dlq` (the one
    builder of dead-letter headers), so `alerts.dlq` carries the headers the worker's
    `events.dlq` has (docs/alerts.md, "Dead letters")."""
    return dead_letter_of(key, value, field=exc.field, reason=str(exc), topic=topic,
                          partition=partition, offset=offset, max_bytes=_DLQ_MAX_BYTES)  # fmt: skip


async def handle_alert(
    pool: AsyncConnectionPool[Any],
    value: bytes | None,
    partition: int,
    offset: int,
    *,
    shadow: bool = False,
) -> tuple[str, int | None] | InvalidAlert:
    """Store one message; ("new", case) or ("duplicate", None), or the contract error. A
    shadow alert (`shadow`) is stored apart and opens no case: ("new", None)."""
    if value is None:
        return InvalidAlert("message", "is empty (a tombstone)")
    try:
        alert = parse_alert(value)
    except InvalidAlert as exc:
        return exc
    payload = orjson.loads(value)
    async with pool.connection() as conn:
        if shadow:
            new = await store.ingest_shadow_alert(
                conn, alert, payload, partition=partition, offset=offset
            )
            return ("new", None) if new else ("duplicate", None)
        case_id = await store.ingest_alert(conn, alert, payload, partition=partition, offset=offset)
    return ("new", case_id) if case_id is not None else ("duplicate", None)


@dataclass
class ReviewService:
    """The review service; `run()` until stopped (SIGINT/SIGTERM, or `stop()`)."""

    settings: ReviewSettings
    metrics: ReviewMetrics = field(default_factory=ReviewMetrics)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stopping.set()

    def producer_config(self) -> dict[str, Any]:
        """The decision and dead-letter producer's settings: built by `stream.kafka_clients`,
        with the broker's SSL/SASL (`settings.kafka`) as the worker has them."""
        return kafka_config(
            self.settings.bootstrap, self.settings.kafka, "aiokafka",
            client_id="riskstream-review", acks="all", enable_idempotence=False, linger_ms=5,
        )  # fmt: skip

    def consumer_config(self) -> dict[str, Any]:
        """The alert consumer's settings (`stream.kafka_clients`, as `producer_config`)."""
        s = self.settings
        return kafka_config(
            s.bootstrap, s.kafka, "aiokafka",
            group_id=s.group, client_id="riskstream-review", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=s.fetch_max_wait_ms,
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def _pool(self) -> AsyncIterator[AsyncConnectionPool[Any]]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.settings.database_url, min_size=1, max_size=8, open=False, timeout=15
        )
        try:
            await pool.open(wait=True, timeout=30)
        except Exception as exc:
            raise ReviewError(
                f"cannot reach the database at {redact(self.settings.database_url)}: {exc}"
            ) from None
        try:
            yield pool
        finally:
            await pool.close()

    async def run(self) -> None:
        s = self.settings
        applied = await asyncio.to_thread(migrate, s.database_url)
        if applied:
            log.info("schema migrations applied: %s", applied)
        import uvicorn
        from aiokafka import AIOKafkaProducer

        async with self._pool() as pool:
            producer = AIOKafkaProducer(**self.producer_config())
            await producer.start()
            try:
                state = ConsoleState(pool, UserStore(s.users_file), self.metrics, self._wake.set,
                                     throttle=SignInThrottle(s.login_limits()),
                                     trusted_proxies=s.proxies(),
                                     lists_file=s.lists_file)  # fmt: skip
                secret = s.secret.get_secret_value() if s.secret else secrets.token_urlsafe(48)
                app = create_app(
                    state, secret=secret, https_only=s.https_only, max_age_s=s.session_max_age_s
                )
                # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1 by
                # default; the console believes it only from RISKSTREAM_REVIEW_TRUSTED_PROXIES.
                config = uvicorn.Config(app, host=s.host, port=s.port, log_level="warning",
                                        access_log=False, lifespan="off",
                                        proxy_headers=False)  # fmt: skip
                server = _server_class()(config)
                tasks = [
                    asyncio.create_task(server.serve(), name="console"),
                    asyncio.create_task(self._publish_loop(pool, producer), name="publisher"),
                ]
                if s.consume:
                    tasks.append(
                        asyncio.create_task(self._consume(pool, producer), name="consumer")
                    )
                while not server.started:
                    if tasks[0].done():
                        await tasks[0]
                        raise ReviewError(f"the console did not start on {s.host}:{s.port}")
                    await asyncio.sleep(0.05)
                log.info("review console on http://%s:%d/", s.host, s.port)
                self.started.set()
                stopper: asyncio.Task[Any] = asyncio.create_task(self._stopping.wait())
                waiting: list[asyncio.Task[Any]] = [*tasks, stopper]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                server.should_exit = True
                for task in tasks[1:]:
                    task.cancel()
                stopper.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for task in done:
                    if task is not stopper and not task.cancelled() and task.exception():
                        raise ReviewError(f"{task.get_name()} failed: {task.exception()!r}")
            finally:
                await producer.stop()

    async def _consume(self, pool: AsyncConnectionPool[Any], producer: Any) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        topics = [s.alerts_topic]
        shadow_topic = s.shadow_alerts_topic.strip()
        if shadow_topic not in ("", "-", s.alerts_topic):
            topics.append(shadow_topic)
        consumer = AIOKafkaConsumer(*topics, **self.consumer_config())
        try:
            await consumer.start()  # inside: a stop during start must still close it
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, records in batches.items():
                    for rec in records:
                        await self._one(pool, producer, rec.value, tp.partition, rec.offset,
                                        rec.key, topic=tp.topic)  # fmt: skip
                if batches:
                    await consumer.commit()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _one(self, pool: AsyncConnectionPool[Any], producer: Any, value: bytes | None,
                   partition: int, offset: int, key: bytes | None,
                   topic: str | None = None) -> None:  # fmt: skip
        s = self.settings
        topic = topic or s.alerts_topic
        shadow = topic != s.alerts_topic
        outcome = await handle_alert(pool, value, partition, offset, shadow=shadow)
        if isinstance(outcome, InvalidAlert):
            dead = alert_dead_letter(outcome, key, value, topic, partition, offset)
            await producer.send_and_wait(s.dlq_topic, dead.value, key=dead.key,
                                         headers=list(dead.headers))  # fmt: skip
            self.metrics.dead_letters.labels(outcome.field).inc()
            log.warning("alert at %s:%d:%d dead-lettered: %s", topic, partition, offset,
                        outcome)  # fmt: skip
        elif shadow:
            (self.metrics.shadow_ingested if outcome[0] == "new" else self.metrics.duplicates).inc()
        elif outcome[0] == "new":
            self.metrics.ingested.inc()
        else:
            self.metrics.duplicates.inc()

    async def _publish_loop(self, pool: AsyncConnectionPool[Any], producer: Any) -> None:
        while True:
            try:
                await self.publish_pending(pool, producer)
            except Exception as exc:  # the broker or database is away: retry later
                log.warning("publishing decisions failed (will retry): %r", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_PUBLISH_EVERY_S)

    async def publish_pending(self, pool: AsyncConnectionPool[Any], producer: Any) -> int:
        """Put every unpublished decision on the topic; how many went out."""
        sent = 0
        while True:
            async with pool.connection() as conn:
                pending = await store.pending_decisions(conn)
            if not pending:
                return sent
            ids = []
            for raw in pending:
                obj = orjson.loads(raw)
                await producer.send_and_wait(
                    self.settings.decisions_topic, raw, key=str(obj["user_id"]).encode()
                )
                ids.append(str(obj["decision_id"]))
            async with pool.connection() as conn:
                await store.mark_published(conn, ids)
            self.metrics.published.inc(len(ids))
            sent += len(ids)


def run_service(settings: ReviewSettings) -> None:
    """Run until SIGINT or SIGTERM."""
    service = ReviewService(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    asyncio.run(main())
