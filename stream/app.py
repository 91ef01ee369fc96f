"""The Faust app: `faust -A stream.app worker --without-web` or `riskstream worker`.

Settings come from `RISKSTREAM_*` environment variables (see `stream.settings`); `riskstream
worker` turns its flags into those. The app consumes the events topic in micro-batches
(`stream.batching.take_batches`: sized by `stream.latency.BatchController` within
`latency_budget_ms`, at most `batch_max` messages, cut `batch_wait_ms` after a batch's first
message at the latest; the next batch fills while one is processed), hands each batch to the
runtime (with `pipeline_stages`, in two: `stage`, parse, window update, model inputs; `finish`,
model, rules, cooldown check, publication; batch k+1 staged while batch k finishes), and
acknowledges a batch's offsets only once it is processed, i.e. after the window update, the
cooldown check and the publication of its alerts and dead letters, and after every batch before
it was acknowledged (at-least-once).

The runtime (model, rules, Redis stores) is built in the app's first-start hook, before the
consumer and the agent start: no batch can arrive before it exists. A batch whose processing
raises anything the runtime does not retry (it retries Redis and the broker) ends the worker
with exit code 70 after its topic, partition and offsets are logged: it stays unacknowledged,
the group rebalances, and whoever restarts the worker gets it again. A live worker that
silently stopped committing a partition would be worse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from events.terminal import is_terminal
from stream.kafka_clients import faust_credentials
from stream.messages import Incoming
from stream.settings import WorkerSettings

if TYPE_CHECKING:
    import faust

    from stream.runtime import BatchHandler

__all__ = [
    "EXIT_BATCH_FAILED",
    "EXIT_REASONS",
    "EXIT_STALLED",
    "EXIT_UNCOMMITTED",
    "create_app",
    "main",
]

log = logging.getLogger(__name__)

#: The worker's own exit codes (the supervisor names them in `worker_restarts_total`'s reason).
EXIT_UNCOMMITTED: Final = 75  # EX_TEMPFAIL: stopped while a batch could not finish
EXIT_BATCH_FAILED: Final = 70  # EX_SOFTWARE: a batch raised what the runtime does not retry
EXIT_STALLED: Final = 76  # a partition with lag made no progress for stall_exit_s
EXIT_REASONS: Final = {EXIT_UNCOMMITTED: "unfinished batch", EXIT_BATCH_FAILED: "batch failed",
                       EXIT_STALLED: "stalled"}  # fmt: skip
_FINAL_COMMIT_S: Final = 5.0  # commit what was acked before a failed batch, for at most this


def private_datadir(configured: Path | None) -> Path:
    """Faust's data folder: `configured`, else a folder of this user's own under the temporary
    folder (mode 0700; one owned by another user, or open to others, is refused)."""
    if configured is not None:
        return configured
    path = Path(tempfile.gettempdir()) / f"riskstream-faust-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(
            f"{path}: not a private folder of this user (mode {stat.filemode(st.st_mode)}, "
            f"owner {st.st_uid}); set RISKSTREAM_FAUST_DATADIR"
        )
    return path


def _default_runtime(settings: WorkerSettings) -> BatchHandler:
    from stream.runtime import WorkerRuntime

    return WorkerRuntime(settings)


def stop_deadline_s(session_s: float) -> float:
    """How long a stopping worker may take: the unfinished batch's grace (the session timeout),
    then the final commit and the LeaveGroup (`_FINAL_COMMIT_S` each), then a margin; under the
    supervisor's 30 s before it kills.

    >>> stop_deadline_s(6.0)
    18.0
    """
    return session_s + 2 * _FINAL_COMMIT_S + 2.0


_exit_timer: threading.Timer | None = None


def exit_after(deadline_s: float) -> None:
    """Exit (code 75, nothing more committed: the batch is redelivered) unless the process has
    ended within `deadline_s`; one timer, however many signals come."""
    global _exit_timer
    if _exit_timer is not None:
        return

    def give_up() -> None:
        log.critical(
            "stopping took more than %.0f s (a batch could not finish: Redis or the broker "
            "down?); exiting without committing it (it will be redelivered)",
            deadline_s,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_UNCOMMITTED)

    _exit_timer = threading.Timer(deadline_s, give_up)
    _exit_timer.daemon = True
    _exit_timer.start()


def create_app(
    settings: WorkerSettings | None = None,
    runtime_factory: Callable[[WorkerSettings], BatchHandler] | None = None,
) -> faust.App:
    """Build the worker app (Faust is imported here: the module itself stays light).

    `runtime_factory` (default: `WorkerRuntime`) builds what handles each batch; the benchmark's
    transport-only worker passes one that does no work.
    """
    import faust

    conf: WorkerSettings = settings or WorkerSettings()
    settings = conf
    factory = runtime_factory or _default_runtime
    session_s = settings.broker_session_timeout_s

    class WorkerApp(faust.App):
        runtime: BatchHandler

        async def on_first_start(self) -> None:
            """Before the consumer and the agents start: the runtime and its HTTP endpoint."""
            await super().on_first_start()
            self.runtime = await asyncio.to_thread(factory, conf)
            if conf.metrics_port:
                from stream.prometheus import serve

                serve(self.runtime.metrics, self.runtime.health, conf.metrics_host,
                      conf.metrics_port)  # fmt: skip
            log.info("worker ready: %s, batches of ≤ %d within %d ms, latency budget %d ms",
                     self.runtime.describe(), conf.batch_max, conf.batch_wait_ms,
                     conf.latency_budget_ms)  # fmt: skip

        async def on_stop(self) -> None:
            """Stopping (SIGTERM): once the streams are drained and the producer flushed, commit
            and leave the group now, not when Faust's consumer thread winds down after its event
            loop has closed: the group hands the partitions on while this process exits."""
            await super().on_stop()
            await _leave_group(self)

    class QuietWorker(faust.Worker):
        """Faust's worker without its start-up spinner when stdout is not a terminal: the
        spinner writes cursor escapes and backspaces into a log file whatever it is. A stop
        ends within `stop_deadline_s(session_s)` whatever it waits on."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not is_terminal(self.stdout):
                self.spinner = None

        def _schedule_shutdown(self, signal: Any) -> None:
            # Faust's consumer waits for every started batch to be acked before it stops
            # (`stream_wait_empty`): a batch retrying a Redis that is down is never acked, and
            # the process would wait until killed, neither committing nor leaving the group.
            exit_after(stop_deadline_s(session_s))
            super()._schedule_shutdown(signal)

    app = WorkerApp(
        settings.consumer_group,
        Worker=QuietWorker,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),  # stream.kafka_clients
        broker_session_timeout=session_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # topics are created up front (dev up, compose init)
        topic_disable_leader=True,
        web_enabled=False,
        worker_redirect_stdouts=False,
        datadir=str(private_datadir(settings.faust_datadir)),
        producer_acks=-1,
    )
    from stream.transport import worker_transport

    app.transport = worker_transport(app, settings.fetch_max_wait_ms)
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(settings.events_topic, **raw)
    names = [settings.alerts_topic, settings.dlq_topic, settings.scores_topic]
    if settings.shadow_bundle is not None:  # stream/shadow.py
        names += [settings.shadow_alerts_topic, settings.shadow_scores_topic]
    topics = {name: app.topic(name, **raw) for name in names}

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> Any:
        fut = await topics[topic].send(key=key, value=value, headers=headers)
        return await fut

    from stream.watch import ConsumerCheck

    health_check = ConsumerCheck(settings.stall_timeout_s, timeout_s=settings.health_check_s * 2,
                                 stall_exit_s=settings.stall_exit_s)  # fmt: skip

    @app.timer(settings.health_check_s)  # type: ignore[untyped-decorator]
    async def check_health() -> None:
        if settings.fault_stall_file is not None:
            _inject_stall(app, settings.fault_stall_file)
        stalled = await health_check.run(app.consumer, app.runtime, time.monotonic())
        if stalled:
            # A consumer that stopped fetching does not come back by itself (faust-streaming
            # #175, #640): a new process does. Not Faust's clean stop, which waits on the very
            # streams that hang: the Kafka consumer alone is closed, with a time limit.
            log.critical("partition %s: lag and no commit for %.0f s while Redis and the broker "
                         "answer; exiting with code %d (stalled) to be restarted",
                         ", ".join(stalled), settings.stall_exit_s, EXIT_STALLED)  # fmt: skip
            await _leave_group(app)
            os._exit(EXIT_STALLED)

    # concurrency=1: a user's events must be windowed in partition order, and Faust can
    # commit past a batch still in flight when agents run concurrently.
    @app.agent(events, name="score-events", concurrency=1)
    async def score_events(stream: faust.StreamT[bytes]) -> None:
        from stream.batching import take_batches
        from stream.codecs import dead_letter_undecodable, split_undecodable
        from stream.latency import BatchController

        sizer = BatchController(settings.latency_budget_ms / 1000, settings.batch_max,
                                settings.batch_wait_ms / 1000)  # fmt: skip
        from stream.pipeline import BatchPipeline, InFlight

        async def ack(item: InFlight) -> None:
            for event in item.events:
                await stream.ack(event)
            sizer.observe(len(item.events), item.done_at - item.began, full=item.full,
                          oldest_age_s=item.oldest_s)  # fmt: skip

        async def failed(item: InFlight) -> None:
            await _end_worker(app, item.incoming)

        def unfinished(item: InFlight) -> None:
            log.critical("stopping with a batch of %d unfinished: exiting without committing "
                         "it (it will be redelivered)", len(item.incoming))  # fmt: skip
            os._exit(EXIT_UNCOMMITTED)

        # With pipeline_stages, batch k+1 is staged (parse, Redis, model inputs) while batch k
        # finishes (model, rules, publication); either way each batch is acked once finished,
        # in order (stream.pipeline).
        pipeline = BatchPipeline(app.runtime, send, ack, failed, stages=settings.pipeline_stages)
        try:
            # The next batch fills while these are processed.
            async for batch in take_batches(stream, sizer.plan, settings.batch_max):
                began = time.perf_counter()
                cut_at_ms = time.time() * 1000
                # Before any await: the plan the batch was cut by.
                full = len(batch) >= sizer.plan().max_size
                # Placeholders of record batches aiokafka could not decode: dead-lettered (and
                # acked with the rest), never handed to the runtime.
                decodable, undecodable = split_undecodable(batch)
                if undecodable:
                    await dead_letter_undecodable(undecodable, send, settings,
                                                  app.runtime.metrics)  # fmt: skip
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
                stamps = [m.timestamp_ms for m in incoming if m.timestamp_ms is not None]
                oldest_s = (cut_at_ms - min(stamps)) / 1000 if stamps else None
                await pipeline.submit(InFlight(batch, incoming, began, oldest_s, full))
            await pipeline.drain()
        except asyncio.CancelledError:
            # Stopping (SIGTERM): finish and ack the batches in flight before the final commit.
            await pipeline.stop(settings.broker_session_timeout_s, unfinished)
            raise

    return app


def _inject_stall(app: Any, trigger: Path) -> None:
    """Tests only: when `trigger` exists, delete it and stop fetching every assigned partition
    (paused in the consumer: the worker stays up, idle, with lag), like the reported stalls."""
    try:
        trigger.unlink()
    except FileNotFoundError:
        return
    tps = app.consumer.assignment()
    log.warning("fault injected (%s): fetching paused for %d partitions", trigger, len(tps))
    app.consumer.pause_partitions(tps)


async def _leave_group(app: Any) -> None:
    """Commit what was acknowledged and close the Kafka consumer, which sends LeaveGroup: the
    group hands the partitions on at once; a member that just vanishes holds them for the
    session timeout. Each step at most `_FINAL_COMMIT_S`; the worker exits whatever happens."""
    # faust-streaming 0.15 (pinned): the app's consumer, its thread, that thread's aiokafka one
    consumer = app._consumer
    if consumer is None or consumer._thread._consumer is None:  # never started: no group
        return
    thread = consumer._thread
    try:
        await asyncio.wait_for(consumer.commit(), _FINAL_COMMIT_S)
        await asyncio.wait_for(thread.call_thread(thread._ensure_consumer().stop), _FINAL_COMMIT_S)
    except Exception:  # leaving anyway
        log.warning("leaving the group failed: its partitions wait for the session timeout",
                    exc_info=True)  # fmt: skip


async def _end_worker(app: Any, batch: list[Incoming]) -> None:
    """A batch failed with an error the runtime does not retry: log where, commit what was
    acknowledged before it, and exit non-zero without acknowledging it (it is redelivered)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for msg in batch:
        spans.setdefault((msg.topic, msg.partition), []).append(msg.offset)
    where = ", ".join(f"{t}[{p}] offsets {min(o)}-{max(o)}" for (t, p), o in spans.items())
    log.critical("a batch of %d messages failed (%s); exiting with code %d without committing "
                 "it: it is redelivered after the rebalance", len(batch), where,
                 EXIT_BATCH_FAILED, exc_info=True)  # fmt: skip
    try:
        await asyncio.wait_for(app.consumer.commit(), _FINAL_COMMIT_S)
    except Exception:  # leaving anyway; the rest is redelivered
        log.warning("the final commit failed", exc_info=True)
    os._exit(EXIT_BATCH_FAILED)


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
