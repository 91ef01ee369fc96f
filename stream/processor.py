"""One micro-batch, end to end, without Faust: parse → windows (one Redis round trip) → score →
rules → cooldown → explained alerts. The Faust agent feeds it and publishes what it returns.

Pure of Kafka, so it is tested against the real Redis alone, and the worker stays thin.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np

from events import (
    EID_SLICE,
    LABELS,
    RECORD_SIZE,
    Alert,
    Event,
    InvalidEvent,
    Reason,
    alert_to_dict,
    encode_event,
    format_ts_ms,
    parse_event,
)
from events.calibration import HeadCalibration, margin_severity, parse_calibration
from events.contract import MAX_EVENT_BYTES, AlertType, Severity
from events.window import Records, select_windows
from export import Bundle
from export.loader import PreparedWindows
from stream.cooldowns import CooldownStore
from stream.dlq import DeadLetter, DeadLetterLog, dead_letter
from stream.explain import RecentEventIds, occlusion, window_facts, window_summary
from stream.messages import Incoming
from stream.model_slot import Serving
from stream.rules import RuleSet, RulesFile

__all__ = ["SCORE_CHUNK", "Outcome", "Processor", "Scored", "Staged", "alert_id"]

log = logging.getLogger(__name__)

#: A batch's windows are scored in length-sorted chunks of this many, each padded to its own
#: longest window: finer chunks pad less (measured, `small` bundle, batches of 1,024 stream
#: windows on 2 cores: 2,700 windows/s at 64, 2,190 at 256, 1,140 at 1,024; 32 is no better).
SCORE_CHUNK: Final = 64
# Namespace of the alert ids (uuid5): any fixed UUID would do; this one must never change.
_ALERT_ID_NAMESPACE: Final = uuid.UUID("5b0e7a53-6c3f-4d1e-9a2b-7f4c1d8e0a61")


def alert_id(user_id: str, alert_type: str, event_id: str) -> str:
    """The alert's id: a UUID derived from the user, the type and the triggering event.

    Delivery is at-least-once: the cooldown is set only after the broker has the alert, so a
    worker that dies in between raises it again when the batch is redelivered, on the same
    event (the first one over the threshold, see `Processor._candidates`), hence with the same
    id. Consumers deduplicate on it.

    >>> alert_id("u1", "fraud", "e9") == alert_id("u1", "fraud", "e9")
    True
    >>> alert_id("u1", "fraud", "e9") != alert_id("u1", "abnormal_click", "e9")
    True
    """
    return str(uuid.uuid5(_ALERT_ID_NAMESPACE, "\x1f".join((user_id, alert_type, event_id))))


@dataclass(frozen=True)
class Scored:
    """A batch's scored windows, with what judging them takes: the live model judges them
    (`Processor.judge`), and a shadow model may judge the very same ones (`stream.shadow`)."""

    msgs: list[Incoming]  # the message of each window's event
    events: list[Event]
    windows: list[Records]
    ruleset: RuleSet  # the rules the live model applied to this batch
    now_ms: int


@dataclass
class Outcome:
    """What a batch produced, and how long its parts took."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    alerts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (user_id, alert)
    # (type, model|rule|deny_list)
    alert_sources: list[tuple[str, str]] = field(default_factory=list)
    alert_latency_s: list[float] = field(default_factory=list)
    # Model scores over the threshold on windows shorter than the bundle allows, per type.
    short_windows: dict[str, int] = field(default_factory=dict)
    # Model or rule candidates dropped because the event is on the allow list, per type.
    allow_suppressed: dict[str, int] = field(default_factory=dict)
    cooldowns: list[tuple[str, str, str]] = field(default_factory=list)  # (user, type, event)
    scores: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    processed: int = 0  # valid events, redelivered ones included
    duplicates: int = 0
    redis_s: float = 0.0
    inference_s: float = 0.0
    model_version: str = ""
    scored: Scored | None = None  # the windows scored (None: none was)


@dataclass(frozen=True)
class Staged:
    """A batch staged (`Processor.stage`): its outcome so far (dead letters, the windows to
    score) and their model inputs, for `Processor.finish`."""

    out: Outcome
    bundle: Bundle
    inputs: PreparedWindows | None = None  # None: nothing to score


def _upto(stored: bytes, record: bytes) -> bytes:
    """The stored records up to and including `record`'s event (empty when not stored)."""
    eid = record[EID_SLICE]
    for end in range(len(stored), 0, -RECORD_SIZE):
        start = end - RECORD_SIZE
        if stored[start + EID_SLICE.start : start + EID_SLICE.stop] == eid:
            return stored[:end]
    return b""


def _key_mismatch(key: bytes | None) -> InvalidEvent:
    """The refusal of an event not keyed by its user: its window would be updated from two
    partitions, out of order."""
    if key is None:
        return InvalidEvent("key", "is missing: events must be keyed by their user_id")
    return InvalidEvent("key", "is not the event's user_id (events must be keyed by it)")


_LATE = InvalidEvent(
    "ts", "is older than the user's newest event by more than allowed_lateness_s (late)"
)


@dataclass
class _Candidate:
    index: int  # into the batch's scored events
    alert_type: AlertType
    source: str  # "model", "rule" or "deny_list"
    severity: Severity
    reasons: list[Reason]
    threshold: float | None = None  # the segment's, where one decided; else the bundle's
    versions: tuple[str, ...] = ()  # rules / lists versions that decided beside the model


#: Severity of an alert raised by a deny list entry.
DENY_SEVERITY: Final[Severity] = "high"


class Processor:
    """Turns batches of messages into dead letters, window updates, scores and alerts."""

    def __init__(
        self,
        rules: RulesFile,
        cooldowns: CooldownStore,
        *,
        occlusion_top: int = 3,
        debug_scores: bool = False,
        dlq_max_bytes: int = MAX_EVENT_BYTES,
        require_user_key: bool = True,
    ) -> None:
        self.rules = rules
        self.cooldowns = cooldowns
        self.occlusion_top = occlusion_top
        self.debug_scores = debug_scores
        self.names = RecentEventIds()
        self.dlq_max_bytes = dlq_max_bytes
        self.require_user_key = require_user_key
        self.dead_letter_log = DeadLetterLog()
        self._calibration: tuple[str, dict[str, HeadCalibration]] = ("", {})

    def calibration(self, bundle: Bundle) -> dict[str, HeadCalibration]:
        """The bundle's calibration per head (read once per model version). A bundle without
        one (exported before it) keeps the old behaviour: severity from the score's margin over
        the threshold, any window length alerts; said once per bundle."""
        version, calib = self._calibration
        if version != bundle.model_version:
            # Checked when the manifest was read: a bad one never gets here.
            calib = parse_calibration(bundle.manifest.calibration)
            missing = [h for h in LABELS if h not in calib]
            if missing:
                log.warning(
                    "bundle %s has no severity calibration for %s (exported before it): "
                    "severity from the score's margin over the threshold, every window "
                    "length alerts; export it again to calibrate",
                    bundle.model_version,
                    ", ".join(missing),
                )
            self._calibration = (bundle.model_version, calib)
        return calib

    def parse(
        self, batch: list[Incoming], now_ms: int, out: Outcome
    ) -> list[tuple[Incoming, Event]]:
        """Valid events; the rest become dead letters with their reason (see `stream.dlq`)."""
        good: list[tuple[Incoming, Event]] = []
        for msg in batch:
            try:
                if msg.value is None:
                    raise InvalidEvent("message", "is empty (a tombstone)")
                ev = parse_event(msg.value, now_ms=now_ms)
                if self.require_user_key and msg.key != ev.user_id.encode():
                    raise _key_mismatch(msg.key)
                good.append((msg, ev))
            except InvalidEvent as exc:
                self.dead_letter_log.report(msg, exc)
                out.dead_letters.append(dead_letter(msg, exc, self.dlq_max_bytes))
            except Exception as exc:  # a parser bug must not take the batch (and worker) down
                self.dead_letter_log.report(msg, exc, unexpected=True)
                refused = InvalidEvent("message", f"could not be parsed ({type(exc).__name__})")
                out.dead_letters.append(dead_letter(msg, refused, self.dlq_max_bytes))
        return good

    def process(
        self, batch: list[Incoming], serving: Serving, now_ms: int | None = None
    ) -> Outcome:
        """Run one batch with one model (`serving`: bundle, policy and window store, a frozen
        snapshot) and one rule set: `stage`, then `finish`. Redis errors propagate as
        `RedisStateError` (the caller retries the whole batch: window appends are idempotent,
        so a retry never double-counts)."""
        return self.finish(self.stage(batch, serving, now_ms))

    def stage(self, batch: list[Incoming], serving: Serving, now_ms: int | None = None) -> Staged:
        """The first half of `process`: parse, the window update (one Redis round trip), the
        windows to score and their model inputs. Batches must be staged in their order, and
        finished in that order too (the worker stages one while it finishes the one before:
        `stream.runtime`)."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        out = Outcome()
        bundle = serving.bundle
        out.model_version = bundle.model_version
        good = self.parse(batch, now, out)
        out.processed = len(good)
        if not good:
            return Staged(out, bundle)
        records = [encode_event(ev, bundle.spec) for _, ev in good]
        for (_, ev), rec in zip(good, records, strict=True):
            self.names.add(rec, ev.event_id)
        began = time.perf_counter()
        results = serving.store.append_batch(
            [(ev.user_id, r) for (_, ev), r in zip(good, records, strict=True)]
        )
        out.redis_s = time.perf_counter() - began
        out.duplicates = sum(r.duplicate for r in results)
        for (msg, _ev), result in zip(good, results, strict=True):
            if result.late:  # nothing was written: it goes where refused events go
                self.dead_letter_log.report(msg, _LATE)
                out.dead_letters.append(dead_letter(msg, _LATE, self.dlq_max_bytes))
        out.processed -= sum(r.late for r in results)
        # A redelivered event is scored again on the window as it was at that event: after a
        # crash between the window update and the alerts' publication, its alert is not lost
        # (the cooldown, set only after publication, keeps a re-sent one from alerting twice).
        # That window is known only while nothing was evicted since: the stored window is not
        # full, or the event is still its newest record. Otherwise (a full window that moved
        # on: its oldest records are gone) the event is not scored, as one no longer in its
        # window (evicted, or stale) is not: a shorter window would give another score.
        fresh: list[int] = []
        chosen: list[bytes] = []
        policy = serving.policy
        full = policy.max_events * RECORD_SIZE
        for i, (result, rec) in enumerate(zip(results, records, strict=True)):
            if result.late:
                continue
            newest = result.stored[-RECORD_SIZE:] == rec
            stored = result.stored if newest and not result.duplicate else _upto(result.stored, rec)
            if result.duplicate and len(result.stored) >= full and stored != result.stored:
                stored = b""
            if stored:
                fresh.append(i)
                chosen.append(stored)
        if not fresh:
            return Staged(out, bundle)
        events = [good[i][1] for i in fresh]
        msgs = [good[i][0] for i in fresh]
        windows = select_windows(chosen, policy)
        out.scored = Scored(msgs, events, windows, self.rules.current(), now)
        return Staged(out, bundle, bundle.prepare_windows(windows, max_batch=SCORE_CHUNK))

    def finish(self, staged: Staged) -> Outcome:
        """Score and judge a staged batch: a new `Outcome` each call, so that a retry (Redis
        failed in the cooldown check) starts over."""
        out = replace(staged.out, alerts=[], alert_sources=[], alert_latency_s=[],
                      short_windows={}, allow_suppressed={}, cooldowns=[], scores=[])  # fmt: skip
        if out.scored is not None:
            self.judge(out.scored, staged.bundle, out, staged.inputs)
        return out

    def judge(
        self,
        scored: Scored,
        bundle: Bundle,
        out: Outcome,
        inputs: PreparedWindows | None = None,
    ) -> None:
        """Score `scored`'s windows with `bundle` (from `inputs` when prepared for it); its
        scores (debug) and alerts (rules, cooldowns of this processor's store) into `out`."""
        events, windows, ruleset, now = scored.events, scored.windows, scored.ruleset, scored.now_ms
        began = time.perf_counter()
        if inputs is None:
            probs = bundle.score_windows(windows, max_batch=SCORE_CHUNK)
        else:
            probs = bundle.score_prepared(inputs)
        out.inference_s = time.perf_counter() - began
        if self.debug_scores:
            for ev, p in zip(events, probs, strict=True):
                out.scores.append((ev.user_id, {
                    "event_id": ev.event_id, "user_id": ev.user_id, "ts": format_ts_ms(ev.ts_ms),
                    "fraud": float(p[0]), "abnormal_click": float(p[1]),
                    "model_version": bundle.model_version,
                }))  # fmt: skip
        candidates = self._candidates(
            events, windows, probs, bundle.thresholds, ruleset, self.calibration(bundle), out,
            now,
        )  # fmt: skip
        held = self.cooldowns.held([(events[c.index].user_id, c.alert_type) for c in candidates])
        for cand in (c for c, h in zip(candidates, held, strict=True) if not h):
            msg = scored.msgs[cand.index]
            alert = self._alert(
                cand, events[cand.index], windows[cand.index], probs, now, bundle, ruleset
            )
            out.alerts.append((alert["user_id"], alert))
            out.cooldowns.append((alert["user_id"], cand.alert_type, alert["event_id"]))
            out.alert_sources.append((cand.alert_type, cand.source))
            if msg.timestamp_ms is not None:
                out.alert_latency_s.append(max(0.0, (now - msg.timestamp_ms) / 1000))

    def _candidates(
        self,
        events: list[Event],
        windows: list[Records],
        probs: Any,
        thresholds: dict[str, float],
        ruleset: RuleSet,
        calibration: dict[str, HeadCalibration],
        out: Outcome,
        now_ms: int,
    ) -> list[_Candidate]:
        """At most one per (user, type) per batch: the user's first event on the deny list,
        else the first (in partition order) whose score reaches its threshold (the bundle's, or
        its segment's) on a window long enough for the bundle's calibration, else the first
        event a rule fires on. The first, not the highest-scoring one: a batch redelivered
        after a crash may be cut differently, but its first event over the threshold is the
        same, and so is the alert's id. Events on the allow list raise no model or rule
        candidate (counted in `out.allow_suppressed`); a deny hit is raised even so."""
        best: dict[tuple[str, str], _Candidate] = {}
        hits = ruleset.lists.lookup(events, now_ms) if ruleset.lists else []
        allowed = [allow is not None for _deny, allow in hits] or [False] * len(events)
        suppressed: set[tuple[str, str]] = set()
        for i, (deny, _allow) in enumerate(hits):
            if deny is not None and (events[i].user_id, deny.alert_type) not in best:
                reason = Reason("deny_list", deny.describe())
                best[(events[i].user_id, deny.alert_type)] = _Candidate(
                    i, deny.alert_type, "deny_list", DENY_SEVERITY, [reason],
                    versions=(ruleset.lists.version,),
                )  # fmt: skip
        thr, segments = ruleset.thresholds(events, windows, thresholds)
        for h, head in enumerate(LABELS):
            calib = calibration.get(head)
            for i in np.flatnonzero(probs[:, h] >= thr[:, h]).tolist():
                score = float(probs[i, h])
                if calib is not None and len(windows[i]) < calib.min_events:
                    # validation found windows this short not precise enough to alert on
                    out.short_windows[head] = out.short_windows.get(head, 0) + 1
                    continue
                key = (events[i].user_id, head)
                if allowed[i]:
                    suppressed.add(key)
                    continue
                if key not in best:
                    sev: Severity = (
                        calib.severity(score)
                        if calib is not None
                        else margin_severity(score, float(thr[i, h]))
                    )
                    cand = best[key] = _Candidate(i, head, "model", sev, [])
                    seg = segments[i][h]
                    if seg is not None:
                        cand.threshold = float(thr[i, h])
                        cand.versions = (ruleset.version,)
                        cand.reasons.append(Reason("segment_threshold", (
                            f"{seg.describe()}: {head} threshold {thr[i, h]:g} instead of "
                            f"the bundle's {thresholds[head]:g}"
                        )))  # fmt: skip
        if ruleset.rules:
            for i, fired in enumerate(ruleset.firing_batch(windows)):
                for rule in fired:
                    key = (events[i].user_id, rule.alert)
                    if allowed[i]:
                        suppressed.add(key)
                        continue
                    reason = Reason("rule", rule.describe(), rule_id=rule.rule_id)
                    if key in best:
                        if all(r.rule_id != rule.rule_id for r in best[key].reasons):
                            best[key].reasons.append(reason)  # once, however many events fire
                    else:
                        best[key] = _Candidate(i, rule.alert, "rule", rule.severity, [reason])
        for _user, alert_type in suppressed - best.keys():
            out.allow_suppressed[alert_type] = out.allow_suppressed.get(alert_type, 0) + 1
        return sorted(best.values(), key=lambda c: c.index)

    def _alert(
        self,
        cand: _Candidate,
        event: Event,
        window: Records,
        probs: Any,
        now_ms: int,
        bundle: Bundle,
        ruleset: RuleSet,
    ) -> dict[str, Any]:
        head = LABELS.index(cand.alert_type)
        score = float(probs[cand.index, head])
        reasons = list(cand.reasons) + window_facts(window, bundle.spec)
        driving = occlusion(
            window, bundle.spec, bundle.predict, head, self.occlusion_top, self.names
        )
        if driving is not None:
            reasons.append(driving)
        version = bundle.model_version
        extra = list(cand.versions)
        if any(r.rule_id for r in cand.reasons) and ruleset.version not in extra:
            extra.append(ruleset.version)  # a rule fired (alone or beside the model)
        for part in extra:
            version = f"{version}+{part}"
        alert = Alert(
            alert_id=alert_id(event.user_id, cand.alert_type, event.event_id),
            type=cand.alert_type,
            user_id=event.user_id,
            event_id=event.event_id,
            event_ts_ms=event.ts_ms,
            detected_at_ms=now_ms,
            score=score,
            threshold=(
                cand.threshold
                if cand.threshold is not None
                else float(bundle.thresholds[cand.alert_type])
            ),
            severity=cand.severity,
            model_version=version,
            window=window_summary(window, bundle.spec),
            reasons=tuple(reasons),
        )
        return alert_to_dict(alert)
