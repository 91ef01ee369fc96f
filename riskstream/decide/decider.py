"""One decision, without HTTP: the worker's own processor on a batch of one event.

The event goes through `stream.processor.Processor` exactly as a consumed message would: parsed
by `events.parse_event`, encoded, appended to the user's Redis window by the worker's Lua script
(idempotent by `event_id`: when the same event later arrives on Kafka the window does not count it
twice, and when the stream was first the call scores the window as it was at that event), scored
by the bundle the worker serves (`stream.model_slot.ModelSlot`, verified hot reload), with the
bundle's thresholds and severity calibration and the rules file. Nothing here re-implements the
window, the scoring or the rules: the decision is the alert the worker would raise, read as

- **block**: a model or rule alert whose severity is in `block_at` (default: `critical`), or a
  deny-list hit (`block_deny_list`, default on: docs/lists.md); for a head with `decide:` cuts
  in the rules file, its model alert by its score instead (`stream.rules.DecideCuts`);
- **review**: any other alert (score at or over the head's threshold on a window long enough
  for the bundle's calibration, or a rule that fires);
- **allow**: no alert (an allow-listed user's model and rule alerts are suppressed, as in the
  worker).

Cooldowns do not apply (an API must answer every call; the worker's cooldown keys are neither
read nor written) and nothing is published: the worker raises the alert itself when the event
reaches it. When Redis fails or does not answer in time the answer is the configured fallback
decision (`on_redis_down`), marked `fallback`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, get_args

import redis
from redis.cluster import RedisCluster

from events import Event, InvalidEvent, parse_event
from events.contract import SEVERITIES, Severity
from events.window import AppendResult, WindowPolicy
from stream.cooldowns import CooldownStore
from stream.exceptions import RedisStateError
from stream.messages import Incoming
from stream.model_slot import BatchWindowStore, Serving
from stream.processor import Processor
from stream.redis_connect import cluster_url
from stream.rules import DecideCuts, RulesFile
from stream.runtime import model_slot
from stream.settings import WorkerSettings

__all__ = ["DECISIONS", "DecidePolicy", "Decider", "DecisionKind", "decide_client"]

log = logging.getLogger(__name__)

DecisionKind = Literal["allow", "review", "block"]
DECISIONS: Final[tuple[str, ...]] = get_args(DecisionKind)
#: The topic name messages from the API carry inside the processor (never a Kafka topic).
API_TOPIC: Final = "decide-api"


@dataclass(frozen=True)
class DecidePolicy:
    """How alerts become decisions, and what to answer when Redis is down."""

    block_at: tuple[Severity, ...] = ("critical",)
    block_deny_list: bool = True  # a deny-list hit blocks (else: review, as its severity says)
    on_redis_down: DecisionKind = "review"
    timeout_s: float = 0.1  # Redis socket timeout, and the whole call's deadline
    occlusion_top: int = 3
    reload_poll_s: float = 2.0

    def __post_init__(self) -> None:
        bad = [s for s in self.block_at if s not in SEVERITIES]
        if bad:
            raise ValueError(f"block_at: {bad[0]!r} is not one of {', '.join(SEVERITIES)}")
        if self.on_redis_down not in DECISIONS:
            raise ValueError(f"on_redis_down: must be one of {', '.join(DECISIONS)}")
        if not 0 < self.timeout_s <= 60:
            raise ValueError("timeout_s: must be in (0, 60]")


def decide_client(settings: WorkerSettings, timeout_s: float) -> redis.Redis | RedisCluster:
    """The worker's Redis (same URL, cluster choice and TLS CA), with the API's short timeouts:
    a Redis that does not answer fails the call after `timeout_s`, it does not hang it."""
    url, by_scheme = cluster_url(settings.redis_url.get_secret_value())
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry_on_timeout": False,
    }
    if settings.redis_tls_ca is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_tls_ca)
    if settings.redis_cluster or by_scheme:
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


class Decider:
    """The worker's model slot, rules and window store, and a processor per thread."""

    def __init__(
        self,
        settings: WorkerSettings,
        policy: DecidePolicy | None = None,
        *,
        client: redis.Redis | RedisCluster | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = policy or DecidePolicy()
        self.client = (
            client if client is not None else decide_client(settings, self.policy.timeout_s)
        )
        self.slot = model_slot(settings, self.client)
        self.rules = RulesFile(settings.rules, self.slot.current.bundle.spec)
        self.cooldowns = CooldownStore(self.client, 0, prefix=settings.redis_prefix)  # 0: no Redis
        self._local = threading.local()
        self._poll_lock = threading.Lock()
        self._last_poll = time.monotonic()
        self._clock = clock
        self.fallbacks: dict[str, int] = {}

    # -- the parts -------------------------------------------------------------------------

    def serving(self) -> Serving:
        """The model to use now; a new bundle is looked for at most every `reload_poll_s`, by
        one thread at a time (the others go on with the current one)."""
        now = time.monotonic()
        if now - self._last_poll >= self.policy.reload_poll_s and self._poll_lock.acquire(
            blocking=False
        ):
            try:
                self._last_poll = now
                self.slot.poll()
            finally:
                self._poll_lock.release()
        return self.slot.current

    def _processor(self) -> Processor:
        proc: Processor | None = getattr(self._local, "processor", None)
        if proc is None:
            proc = Processor(
                self.rules,
                self.cooldowns,
                occlusion_top=self.policy.occlusion_top,
                debug_scores=True,  # the scores of every event, alert or not
                require_user_key=False,  # keyed below by the event's own user_id
            )
            self._local.processor = proc
        return proc

    def now_ms(self) -> int:
        """The clock events are checked against (not in the future)."""
        return int(self._clock() * 1000)

    @staticmethod
    def parse(body: bytes, now_ms: int) -> Event:
        """The event, or `InvalidEvent` naming the field (the contract of the topic)."""
        return parse_event(body, now_ms=now_ms)

    def ping(self) -> bool:
        """Whether Redis answers within the timeout."""
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False
        except Exception:  # a cluster client raises its own kinds
            return False

    # -- a decision ------------------------------------------------------------------------

    def decide(self, body: bytes, event: Event, now_ms: int) -> dict[str, Any]:
        """The decision on `event` (already parsed from `body`); Redis failures give the
        fallback decision. `InvalidEvent` when the worker would dead-letter it (late)."""
        (one,) = self.decide_batch([(body, event)], now_ms)
        if isinstance(one, InvalidEvent):
            raise one
        return one

    def decide_batch(
        self, items: Sequence[tuple[bytes, Event]], now_ms: int
    ) -> list[dict[str, Any] | InvalidEvent]:
        """The decisions on several events of distinct users at once, as one worker batch: one
        Redis script call, one model run; each answer equals `decide` on that event alone (the
        events' windows are apart). A late event's answer is its `InvalidEvent`."""
        began = time.perf_counter()
        users = [event.user_id for _, event in items]
        if len(set(users)) != len(users):
            raise ValueError("decide_batch: one event per user (a user's events in turn)")
        serving = self.serving()
        store = _Recording(serving.store)
        msgs = [
            Incoming(body, event.user_id.encode(), API_TOPIC, 0, i, None)
            for i, (body, event) in enumerate(items)
        ]
        try:
            out = self._processor().process(msgs, replace(serving, store=store), now_ms=now_ms)
        except RedisStateError as exc:
            log.warning("redis failed, fallback decision: %s", type(exc.__cause__ or exc).__name__)
            return [self.fallback(event, "redis_unavailable", began) for _, event in items]
        dead = {dl.key: dl for dl in out.dead_letters}
        scored = {user: row for user, row in out.scores}
        alerts_of: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for (user, alert), (_, source) in zip(out.alerts, out.alert_sources, strict=True):
            alerts_of.setdefault(user, []).append((alert, source))
        answers: list[dict[str, Any] | InvalidEvent] = []
        for _, event in items:
            dl = dead.get(event.user_id.encode())
            if dl is not None:  # parsed before: only the window's lateness bound is left
                answers.append(InvalidEvent(dl.field, dl.reason.removeprefix(f"{dl.field}: ")))
            elif event.user_id not in scored:  # a redelivered event evicted from a full window
                answers.append(self.fallback(event, "not_scored", began, duplicate=True))
            else:
                answers.append(
                    self._answer(
                        event, serving, scored[event.user_id], alerts_of.get(event.user_id, []),
                        store.duplicate.get(event.user_id, False), out.model_version, began,
                    )
                )  # fmt: skip
        return answers

    def _answer(
        self,
        event: Event,
        serving: Serving,
        row: dict[str, Any],
        found: list[tuple[dict[str, Any], str]],
        duplicate: bool,
        model_version: str,
        began: float,
    ) -> dict[str, Any]:
        scores = {k: v for k, v in row.items() if k in serving.bundle.thresholds}
        alerts = [a for a, _ in found]
        sources = [source for _, source in found]
        decision = self._decision(alerts, sources, self.rules.rules.decide)
        reasons: list[dict[str, Any]] = []
        rules_hit: list[str] = []
        driving: list[str] = []
        for a in alerts:
            for r in a["reasons"]:
                reasons.append({"head": a["type"], **r})
                if r.get("rule_id"):
                    rules_hit.append(r["rule_id"])
                if r.get("code") == "driving_events":
                    driving.extend(r.get("event_ids", []))
        return {
            "decision": decision,
            "event_id": event.event_id,
            "user_id": event.user_id,
            "scores": scores,
            "thresholds": dict(serving.bundle.thresholds),
            "heads": [
                {
                    "head": a["type"],
                    "score": a["score"],
                    "threshold": a["threshold"],
                    "severity": a["severity"],
                    "source": source,
                }
                for a, source in zip(alerts, sources, strict=True)
            ],
            "reasons": reasons,
            "rules_hit": sorted(set(rules_hit)),
            "driving_events": driving,
            "window_events": alerts[0]["window"]["events"] if alerts else None,
            "duplicate": duplicate,
            "model_version": model_version,
            "rules_version": self.rules.rules.version,
            "fallback": None,
            "latency_ms": round((time.perf_counter() - began) * 1000, 3),
        }

    def _decision(
        self, alerts: list[dict[str, Any]], sources: list[str], cuts: dict[str, DecideCuts]
    ) -> DecisionKind:
        """What the alerts of one event decide: the most severe of each alert's own decision.
        A deny-list hit blocks (`block_deny_list`); a model alert of a head with `decide:` cuts
        in the rules file is decided by its score; any other alert blocks when its severity is
        in `block_at`, else it is a review. No alert: allow."""
        order: dict[DecisionKind, int] = {"allow": 0, "review": 1, "block": 2}
        found: DecisionKind = "allow"
        for alert, source in zip(alerts, sources, strict=True):
            one: DecisionKind
            if source == "deny_list" and self.policy.block_deny_list:
                one = "block"
            elif source == "model" and alert["type"] in cuts:
                one = cuts[alert["type"]].decide(float(alert["score"]))
            else:
                one = "block" if alert["severity"] in self.policy.block_at else "review"
            found = max(found, one, key=order.__getitem__)
        return found

    def fallback(
        self, event: Event, why: str, began: float, *, duplicate: bool = False
    ) -> dict[str, Any]:
        """The configured decision when the window could not be read (or scored)."""
        self.fallbacks[why] = self.fallbacks.get(why, 0) + 1
        bundle = self.slot.current.bundle
        return {
            "decision": self.policy.on_redis_down,
            "event_id": event.event_id,
            "user_id": event.user_id,
            "scores": None,
            "thresholds": dict(bundle.thresholds),
            "heads": [],
            "reasons": [{"code": why, "detail": _FALLBACK_DETAIL[why]}],
            "rules_hit": [],
            "driving_events": [],
            "window_events": None,
            "duplicate": duplicate,
            "model_version": bundle.model_version,
            "rules_version": self.rules.rules.version,
            "fallback": why,
            "latency_ms": round((time.perf_counter() - began) * 1000, 3),
        }


class _Recording:
    """The serving window store, keeping whether each user's append was a duplicate (the
    batch's outcome only counts them)."""

    def __init__(self, store: BatchWindowStore) -> None:
        self._store = store
        self.duplicate: dict[str, bool] = {}

    @property
    def policy(self) -> WindowPolicy:
        return self._store.policy

    def append_batch(self, items: Sequence[tuple[str, bytes]]) -> list[AppendResult]:
        results = self._store.append_batch(items)
        for (user, _), result in zip(items, results, strict=True):
            self.duplicate[user] = result.duplicate
        return results

    def get(self, user_id: str) -> bytes:
        return self._store.get(user_id)


_FALLBACK_DETAIL: Final = {
    "redis_unavailable": "the user's window could not be read or written (Redis failed)",
    "timeout": "no answer within the deadline (Redis or the model too slow)",
    "overloaded": "too many decisions in flight: answered at once, not queued",
    "not_scored": "the event was already in a window that has moved on since: not scored",
}
