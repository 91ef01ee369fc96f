"""The Faust app: `faust -A stream.app worker --without-web` or `riskstream worker`.

Settings come from `RISKSTREAM_*` environment variables (see `stream.settings`); `riskstream
worker` turns its flags into those. The app consumes the events topic in micro-batches
(`stream.batching.take_batches`: at most `batch_max` messages or `batch_wait_ms`; the next batch
fills while one is processed), hands each batch to the runtime and acknowledges its offsets only
after the runtime returned, i.e. after the window update, the cooldown check and the
publication of alerts and dead letters (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from stream.messages import Incoming
from stream.settings import WorkerSettings

if TYPE_CHECKING:
    import faust

    from stream.runtime import BatchHandler

__all__ = ["create_app", "main"]

log = logging.getLogger(__name__)

_EXIT_UNCOMMITTED: Final = 75  # EX_TEMPFAIL: stopped while a batch could not finish


def _broker_credentials(settings: WorkerSettings) -> Any:
    import faust

    if settings.security_protocol == "PLAINTEXT":
        return None
    ssl_context = settings.kafka_ssl_context()
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def create_app(
    settings: WorkerSettings | None = None,
    runtime_factory: Callable[[WorkerSettings], BatchHandler] | None = None,
) -> faust.App:
    """Build the worker app (Faust is imported here: the module itself stays light).

    `runtime_factory` (default: `Runtime`) builds what handles each batch; the benchmark's
    transport-only worker passes one that does no work.
    """
    import faust

    settings = settings or WorkerSettings()
    session_s = settings.broker_session_timeout_s
    app = faust.App(
        settings.consumer_group,
        broker=settings.broker_url,
        broker_credentials=_broker_credentials(settings),
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 6),
        broker_rebalance_timeout=max(10.0, session_s * 2),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # topics are created up front (dev up, compose init)
        topic_disable_leader=True,
        web_enabled=False,
        worker_redirect_stdouts=False,
        datadir=os.environ.get("RISKSTREAM_FAUST_DATADIR", "/tmp/riskstream-faust"),
        producer_acks=-1,
    )
    from stream.transport import worker_transport

    app.transport = worker_transport(app, settings.fetch_max_wait_ms)
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(settings.events_topic, **raw)
    topics = {
        name: app.topic(name, **raw)
        for name in (settings.alerts_topic, settings.dlq_topic, settings.scores_topic)
    }
    state: dict[str, BatchHandler] = {}

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> Any:
        fut = await topics[topic].send(key=key, value=value, headers=headers)
        return await fut

    @app.task  # type: ignore[untyped-decorator]
    async def start_runtime() -> None:
        from stream.runtime import Runtime

        state["runtime"] = await asyncio.to_thread(runtime_factory or Runtime, settings)
        runtime = state["runtime"]
        if settings.metrics_port:
            from stream.prometheus import serve

            serve(runtime.metrics, runtime.health, settings.metrics_host, settings.metrics_port)
        log.info("worker ready: %s, batches of ≤ %d within %d ms", runtime.describe(),
                 settings.batch_max, settings.batch_wait_ms)  # fmt: skip

    # concurrency=1: a user's events must be windowed in partition order, and Faust can
    # commit past a batch still in flight when agents run concurrently.
    @app.agent(events, name="score-events", concurrency=1)
    async def score_events(stream: faust.StreamT[bytes]) -> None:
        from stream.batching import take_batches
        from stream.codecs import dead_letter_undecodable, split_undecodable

        within = settings.batch_wait_ms / 1000
        # The next batch fills while this one is processed; a batch is acked once processed.
        async for batch in take_batches(stream, settings.batch_max, within):
            while "runtime" not in state:  # the first batch can beat the model load
                await asyncio.sleep(0.05)
            # Placeholders of record batches aiokafka could not decode: dead-lettered (and
            # acked with the rest), never handed to the runtime.
            decodable, undecodable = split_undecodable(batch)
            if undecodable:
                await dead_letter_undecodable(undecodable, send, settings, state["runtime"].metrics)
            incoming = [
                Incoming(
                    e.message.value,
                    e.message.key,
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    int(e.message.timestamp * 1000) if e.message.timestamp else None,
                )
                for e in decodable
            ]
            job = asyncio.ensure_future(state["runtime"].handle(incoming, send))
            try:
                await asyncio.shield(job)
            except asyncio.CancelledError:
                # Stopping (SIGTERM): finish and ack this batch before the final commit.
                try:
                    await asyncio.wait_for(job, timeout=settings.broker_session_timeout_s)
                except (TimeoutError, asyncio.CancelledError):
                    log.critical(
                        "stopping with a batch of %d unfinished: exiting without committing "
                        "it (it will be redelivered)",
                        len(incoming),
                    )
                    os._exit(_EXIT_UNCOMMITTED)
                for event in batch:
                    await stream.ack(event)
                raise
            for event in batch:
                await stream.ack(event)

    return app


def main() -> None:
    """`python -m stream.app worker ...`: the Faust command line for the app from the env."""
    create_app().main()


if __name__ == "__main__":
    main()


def __getattr__(name: str) -> Any:
    # `faust -A stream.app` reads `stream.app.app`; built on first access, so importing this
    # module (doctest collection, the CLI) starts nothing.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
