"""A shadow model: a second bundle that judges the live batch's windows and only says so.

`riskstream worker --shadow-bundle B2` (`WorkerSettings.shadow_bundle`) runs a `Shadow` beside
the live model. After the live model has judged a batch and its alerts are on the broker, the
shadow scores the very same windows (`stream.processor.Scored`: the windows, the events and the
rule set the live model used) with its own bundle, applies the same rules, and keeps its own
alert cooldowns (`stream.keys.shadow_prefix`): its scores go to `shadow_scores_topic`
(`scores.shadow`) and its would-be alerts, in the alert schema with the shadow's
`model_version`, to `shadow_alerts_topic` (`alerts.shadow`). Never to the alerts topic.

What the shadow may not do:
- change what the live path alerts: it reads the live batch's windows and nothing else, and
  its cooldown keys are its own;
- stop or stall the live path: anything it raises (scoring, Redis, publishing, a timeout) is
  logged, counted (`shadow_failures_total{stage}`) and the batch goes on without it; after a
  failure the shadow rests for a while (doubling up to a minute) so that a broken shadow
  costs the live path nothing more than one try per rest.

Its bundle is verified like the live one (`stream.model_slot.ModelSlot`: hashes, a probe
window), at start-up (a bad one: `ShadowError`, the worker does not start) and on hot reload (a
bad one is refused, the old shadow keeps judging). It must encode events as the live bundle
does (the same encoding spec): it judges the live model's windows, so a bundle built on another
spec is refused. Delivery is at most once: a batch redelivered after a crash is judged again,
but a shadow batch lost in a crash is not recovered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final

import orjson
import redis
from redis.cluster import RedisCluster

from events import WindowPolicy
from events.window import AppendResult
from export import Bundle
from stream.cooldowns import CooldownStore
from stream.exceptions import StreamError
from stream.keys import shadow_prefix
from stream.model_slot import ModelSlot, Serving
from stream.processor import Outcome, Processor
from stream.prometheus import Metrics
from stream.publish import Record, Send, publish_all
from stream.settings import WorkerSettings

__all__ = ["Shadow", "ShadowError", "check_compatible"]

log = logging.getLogger(__name__)

#: A shadow batch that takes longer than this to reach the broker is given up (counted).
PUBLISH_TIMEOUT_S: Final = 10.0
_FIRST_REST_S: Final = 1.0
_MAX_REST_S: Final = 60.0


class ShadowError(StreamError):
    """A shadow bundle that cannot be used at start-up (unreadable, unverified, or built on
    another encoding than the live one)."""


class _NoStore:
    """The shadow's `Serving` needs a store; it never touches one (it judges the live
    model's windows, read from the live store)."""

    def __init__(self, policy: WindowPolicy) -> None:
        self._policy = policy

    @property
    def policy(self) -> WindowPolicy:
        return self._policy

    def append_batch(self, items: Sequence[tuple[str, bytes]]) -> list[AppendResult]:
        raise RuntimeError("the shadow model never writes windows")

    def get(self, user_id: str) -> bytes:
        raise RuntimeError("the shadow model never reads windows")


def check_compatible(shadow: Bundle, live: Bundle) -> str | None:
    """Why `shadow` cannot judge `live`'s windows (None: it can)."""
    if shadow.spec.spec_hash != live.spec.spec_hash:
        return (
            f"its encoding spec ({shadow.spec.spec_hash[:12]}) is not the live bundle's "
            f"({live.spec.spec_hash[:12]}): it cannot judge the live model's windows"
        )
    return None


class Shadow:
    """The shadow bundle, its processor (same rules as the live one, own cooldowns) and the
    publication of what it would have alerted."""

    def __init__(
        self,
        settings: WorkerSettings,
        client: redis.Redis | RedisCluster,
        live: Processor,
        live_bundle: Bundle,
        metrics: Metrics,
    ) -> None:
        path = settings.shadow_bundle
        if path is None:
            raise ShadowError("no shadow bundle given")
        self.settings = settings
        self.metrics = metrics
        try:
            self.slot = ModelSlot(
                path,
                _NoStore,
                settings.device,
                variant=settings.variant,
                spin=settings.inference_spin,
                threads=settings.inference_threads,
            )
        except Exception as exc:
            raise ShadowError(
                f"shadow bundle {path} refused ({type(exc).__name__}: {exc}); "
                "the live model was not started either: fix or drop --shadow-bundle"
            ) from None
        why = check_compatible(self.slot.current.bundle, live_bundle)
        if why is not None:
            raise ShadowError(f"shadow bundle {path} refused: {why}")
        self.serving: Serving = self.slot.current
        self.cooldowns = CooldownStore(
            client, settings.cooldown_s, prefix=shadow_prefix(settings.redis_prefix)
        )
        self.processor = Processor(
            live.rules,
            self.cooldowns,
            occlusion_top=settings.occlusion_top,
            debug_scores=True,  # every window's shadow score goes to scores.shadow
            dlq_max_bytes=settings.dlq_max_bytes,
            require_user_key=settings.require_user_key,
        )
        self.processor.names = live.names  # explanations name the live batch's events
        self._last_poll = time.monotonic()
        self._refused_seen = 0
        self._incompatible: str | None = None  # the version last refused as incompatible
        self._resting_until = 0.0
        self._rest_s = _FIRST_REST_S
        self._set_model()

    @property
    def model_version(self) -> str:
        """The shadow's model version (what its alerts carry)."""
        return self.serving.model_version

    def _set_model(self) -> None:
        b = self.serving.bundle
        self.metrics.shadow_model_info.clear()
        self.metrics.shadow_model_info.labels(b.model_version, b.variant, b.provider).set(1)

    def poll(self, live: Bundle) -> None:
        """Between batches: a new shadow bundle, verified and compatible with `live`, replaces
        the old one (looked for at most every `reload_poll_s`)."""
        now = time.monotonic()
        if now - self._last_poll < self.settings.reload_poll_s:
            return
        self._last_poll = now
        serving = self.slot.poll()
        if self.slot.refused > self._refused_seen:
            self.metrics.shadow_refused.inc(self.slot.refused - self._refused_seen)
            self._refused_seen = self.slot.refused
        if serving is self.serving:
            return
        why = check_compatible(serving.bundle, live)
        if why is not None:
            if self._incompatible != serving.model_version:
                self._incompatible = serving.model_version
                self.metrics.shadow_refused.inc()
                log.error("shadow bundle %s refused, shadow %s keeps judging: %s",
                          serving.model_version, self.model_version, why)  # fmt: skip
            return
        log.info("shadow model reloaded: %s → %s", self.model_version, serving.model_version)
        self.serving = serving
        self._set_model()

    def judge(self, live: Outcome, live_bundle: Bundle) -> Outcome | None:
        """The shadow's scores and would-be alerts on the windows `live` scored (None: it
        scored none, or the shadow cannot judge this live bundle's windows)."""
        self.poll(live_bundle)
        if live.scored is None:
            return None
        if check_compatible(self.serving.bundle, live_bundle) is not None:
            self.metrics.shadow_skipped.labels("incompatible").inc()
            return None
        out = Outcome(model_version=self.model_version)
        self.processor.judge(live.scored, self.serving.bundle, out)
        return out

    def records(self, out: Outcome) -> list[Record]:
        """`out`'s alerts and scores, for the shadow topics only."""
        s = self.settings
        records: list[Record] = []
        records += [(s.shadow_alerts_topic, u.encode(), orjson.dumps(a), None)
                    for u, a in out.alerts]  # fmt: skip
        records += [(s.shadow_scores_topic, u.encode(), orjson.dumps(x), None)
                    for u, x in out.scores]  # fmt: skip
        return records

    async def run(self, live: Outcome, live_bundle: Bundle, send: Send) -> Outcome | None:
        """Judge and publish; never raises (but for cancellation): a failure is logged,
        counted, and the shadow rests before it tries again."""
        if time.monotonic() < self._resting_until:
            self.metrics.shadow_skipped.labels("resting").inc()
            return None
        stage = "score"
        try:
            out = await asyncio.to_thread(self.judge, live, live_bundle)
            if out is None:
                return None
            stage = "publish"
            await asyncio.wait_for(
                publish_all(send, self.records(out), max_backoff_s=1.0, what="shadow messages"),
                PUBLISH_TIMEOUT_S,
            )
            stage = "cooldowns"
            await asyncio.to_thread(self.cooldowns.start, out.cooldowns)
        except Exception as exc:  # the live path goes on whatever the shadow does
            self.metrics.shadow_failures.labels(stage).inc()
            self._resting_until = time.monotonic() + self._rest_s
            log.error("shadow %s failed at %s (%s: %s); the live model goes on, the shadow "
                      "rests %.0f s", self.model_version, stage, type(exc).__name__, exc,
                      self._rest_s, exc_info=log.isEnabledFor(logging.DEBUG))  # fmt: skip
            self._rest_s = min(self._rest_s * 2, _MAX_REST_S)
            return None
        self._rest_s = _FIRST_REST_S
        m = self.metrics
        m.shadow_inference_seconds.observe(out.inference_s)
        for alert_type, source in out.alert_sources:
            m.shadow_alerts.labels(alert_type, source).inc()
        return out
