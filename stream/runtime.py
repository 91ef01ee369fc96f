"""The worker's moving parts, built from the settings, and one batch with retries.

`WorkerRuntime.handle(batch, send)` runs the processor (in a thread: ONNX Runtime and the Redis
client block), retrying with backoff on Redis errors (window appends are idempotent), then
publishes dead letters, alerts and debug scores and waits until the broker has them
(`stream.publish`). Only then does it return, and only then may the caller acknowledge the
batch's offsets. It is `stage` then `finish`; the app calls the two itself so that one batch is
staged (parse, Redis, model inputs) while the one before it finishes (model, rules, alerts).
(Named apart from `training.loops.Runtime`, where and how a training run computes.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import orjson
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from stream.cooldowns import CooldownStore
from stream.exceptions import RedisStateError
from stream.messages import Incoming
from stream.model_slot import ModelSlot, Serving
from stream.processor import Outcome, Processor, Staged
from stream.prometheus import Health, Metrics
from stream.publish import Record, Send, publish_all
from stream.redis_connect import redis_client as connect
from stream.redis_windows import RedisWindowStore
from stream.rules import RulesFile
from stream.settings import WorkerSettings

if TYPE_CHECKING:
    from stream.shadow import Shadow

__all__ = ["BatchHandler", "WorkerRuntime", "model_slot"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S: Final = 0.1
_R = TypeVar("_R")


class BatchHandler(Protocol):
    """What the app hands each batch to: `WorkerRuntime`, or the benchmark's transport-only one."""

    metrics: Metrics
    health: Health

    def describe(self) -> str:
        """What it serves, for the start-up log line."""
        ...

    async def handle(self, batch: list[Incoming], send: Send) -> object:
        """Return when the batch's offsets may be committed."""
        ...


def redis_client(settings: WorkerSettings) -> redis.Redis | RedisCluster:
    """A Redis (or Redis Cluster) client from the settings (password in the URL, TLS CA file
    if given; see `stream.redis_connect`)."""
    return connect(
        settings.redis_url.get_secret_value(),
        cluster=settings.redis_cluster,
        tls_ca=settings.redis_tls_ca,
    )


def model_slot(settings: WorkerSettings, client: redis.Redis | RedisCluster) -> ModelSlot:
    """The settings' bundle, served over their Redis windows: the worker's and the decision
    API's, built one way."""
    prefix, lateness_s = settings.redis_prefix, settings.allowed_lateness_s
    return ModelSlot(
        settings.bundle,
        lambda policy: RedisWindowStore(client, policy, prefix=prefix, lateness_s=lateness_s),
        settings.device,
        variant=settings.variant,
        max_events=settings.window_max_events,
        max_age_s=settings.window_max_age_s,
        spin=settings.inference_spin,
        threads=settings.inference_threads,
    )


def _shadow(
    settings: WorkerSettings,
    client: redis.Redis | RedisCluster,
    live: Processor,
    serving: Serving,
    metrics: Metrics,
) -> Shadow | None:
    """The shadow model when the settings name one (`stream.shadow`; a bad one: `ShadowError`)."""
    if settings.shadow_bundle is None:
        return None
    from stream.shadow import Shadow

    return Shadow(settings, client, live, serving.bundle, metrics)


class WorkerRuntime:
    """Model slot, rules, Redis store, processor, metrics: what a worker process holds."""

    def __init__(
        self, settings: WorkerSettings, client: redis.Redis | RedisCluster | None = None
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health(
            stall_timeout_s=settings.stall_timeout_s,
            restarts=settings.restarts,
            restart_reason=settings.restart_reason,
        )
        self.metrics.set_restarts(settings.restarts, settings.restart_reason)
        self.client = client if client is not None else redis_client(settings)
        self.model = model_slot(settings, self.client)
        self.serving = self.model.current
        self.rules = RulesFile(settings.rules, self.serving.bundle.spec)
        self.cooldowns = CooldownStore(
            self.client, settings.cooldown_s, prefix=settings.redis_prefix
        )
        self.processor = Processor(
            self.rules,
            self.cooldowns,
            occlusion_top=settings.occlusion_top,
            debug_scores=settings.debug_scores,
            dlq_max_bytes=settings.dlq_max_bytes,
            require_user_key=settings.require_user_key,
        )
        self.shadow = _shadow(settings, self.client, self.processor, self.serving, self.metrics)
        self._last_poll = time.monotonic()
        self._refused_seen = 0
        self._rules_refused_seen = 0
        self.stopping = False
        b = self.serving.bundle
        self.metrics.set_model(b.model_version, b.variant, b.provider)
        self.health.model_version = b.model_version

    def describe(self) -> str:
        """What this runtime serves, for the start-up log line."""
        live = f"model {self.serving.model_version} ({self.serving.bundle.variant})"
        if self.shadow is None:
            return live
        return f"{live}, shadow {self.shadow.model_version} ({self.shadow.serving.bundle.variant})"

    def poll_model(self) -> Serving:
        """Between batches: the snapshot to process the next batch with, a new one if a new
        bundle appeared (looked for at most every `reload_poll_s`)."""
        now = time.monotonic()
        if now - self._last_poll < self.settings.reload_poll_s:
            return self.serving
        self._last_poll = now
        serving = self.model.poll()
        if serving is not self.serving:
            b = serving.bundle
            self.metrics.model_reloads.inc()
            self.metrics.set_model(b.model_version, b.variant, b.provider)
            self.health.model_version = b.model_version
            self.serving = serving
        if self.model.refused > self._refused_seen:
            self.metrics.model_refused.inc(self.model.refused - self._refused_seen)
            self._refused_seen = self.model.refused
        return serving

    async def _retrying(self, work: Callable[..., _R], *args: Any) -> _R:
        """`work(*args)` in a thread, retried with backoff while Redis fails; any other error
        propagates (the caller ends the worker: see `stream.app`)."""
        backoff = _FIRST_BACKOFF_S
        failed = False
        while True:
            try:
                result = await asyncio.to_thread(work, *args)
            except (redis.RedisError, RedisClusterException, RedisStateError) as exc:
                # The stores wrap their own; a cluster's routing errors are no RedisError.
                cause = type(exc.__cause__ or exc).__name__
                self.health.redis_failed(f"{cause}: {exc}")
                failed = True
            else:
                if failed:  # the same work reached Redis this time
                    self.health.redis_ok()
                return result
            self.metrics.retries.labels(cause).inc()
            log.warning("Redis error (%s); retrying in %.1f s", cause, backoff)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.settings.retry_max_backoff_s)

    async def _publish(self, send: Send, out: Outcome) -> None:
        """Dead letters, alerts and debug scores, on the broker before this returns
        (`stream.publish`: retried with backoff; a dead letter too large goes headers-only)."""
        s = self.settings
        records: list[Record] = []
        records += [(s.dlq_topic, d.key, d.value, list(d.headers)) for d in out.dead_letters]
        records += [(s.alerts_topic, u.encode(), orjson.dumps(a), None) for u, a in out.alerts]
        records += [(s.scores_topic, u.encode(), orjson.dumps(x), None) for u, x in out.scores]
        await publish_all(
            send, records, max_backoff_s=s.retry_max_backoff_s, dlq_topic=s.dlq_topic,
            on_retry=self.metrics.retries.labels("broker").inc,
        )  # fmt: skip

    async def handle(self, batch: list[Incoming], send: Send) -> Outcome:
        """Process and publish one batch; returns when it is safe to commit its offsets.

        Redis errors are retried here; any other exception propagates, and the batch must not
        be acknowledged (the caller ends the worker so that it is redelivered)."""
        return await self.finish(batch, await self.stage(batch), send)

    async def stage(self, batch: list[Incoming]) -> Staged:
        """The first half of `handle` (`Processor.stage`: parse, the window update, model
        inputs), retried while Redis fails. The app stages batch k+1 while `finish` runs
        batch k: stages and finishes each run in batch order, one at a time."""
        serving = await asyncio.to_thread(self.poll_model)
        staged = await self._retrying(self.processor.stage, batch, serving)
        if staged.out.processed:  # the window script ran
            self.health.redis_ok()
        return staged

    async def finish(self, batch: list[Incoming], staged: Staged, send: Send) -> Outcome:
        """The second half of `handle`: the model, rules and cooldown check, then publication;
        returns when it is safe to commit the batch's offsets."""
        out = await self._retrying(self.processor.finish, staged)
        if out.scored is not None and out.alert_latency_s:
            # measured at `stage`; the alerts leave now, after the batch before has finished
            waited = max(0.0, time.time() - out.scored.now_ms / 1000)
            out.alert_latency_s = [s + waited for s in out.alert_latency_s]
        await self._publish(send, out)
        await self._retrying(self.cooldowns.start, out.cooldowns)
        self._account(batch, out)
        if self.shadow is not None:  # after the live alerts are out; it never raises
            await self.shadow.run(out, staged.bundle, send)
        return out

    async def check_redis(self) -> bool:
        """PING Redis (between batches, for readiness); whether it answered."""
        try:
            await asyncio.to_thread(self.cooldowns.ping)
        except RedisStateError as exc:
            self.health.redis_failed(str(exc))
            return False
        self.health.redis_ok()
        return True

    def _account(self, batch: list[Incoming], out: Outcome) -> None:
        m = self.metrics
        m.events.inc(len(batch))
        m.duplicates.inc(out.duplicates)
        m.batch_size.observe(len(batch))
        m.redis_seconds.observe(out.redis_s)
        if out.inference_s:
            m.inference_seconds.observe(out.inference_s)
        for d in out.dead_letters:
            m.dlq.labels(d.field).inc()
        for alert_type, source in out.alert_sources:
            m.alerts.labels(alert_type, source).inc()
        for alert_type, count in out.short_windows.items():
            m.short_windows.labels(alert_type).inc(count)
        for alert_type, count in out.allow_suppressed.items():
            m.allow_suppressed.labels(alert_type).inc(count)
        for seconds in out.alert_latency_s:
            m.event_to_alert_seconds.observe(seconds)
        now_ms = time.time() * 1000
        for msg in batch:
            if msg.timestamp_ms is not None:
                m.event_lag_seconds.observe(max(0.0, now_ms - msg.timestamp_ms) / 1000)
        if self.rules.failures > self._rules_refused_seen:
            m.rules_refused.inc(self.rules.failures - self._rules_refused_seen)
            self._rules_refused_seen = self.rules.failures
        self.health.batch_ok()
