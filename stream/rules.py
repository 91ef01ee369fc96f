"""Rules beside the model: a YAML file of count conditions evaluated on the same window.

```yaml
rules:
  - id: clicks_no_purchase
    alert: abnormal_click          # or fraud
    severity: high                 # low, medium, high, critical (default high)
    all:                           # every condition must hold
      - {types: [click, page_view], at_least: 60}
      - {types: [purchase], at_most: 0}
  - id: failed_payments_burst
    alert: fraud
    all:
      - {types: [payment_failed], at_least: 3, within_s: 600}
```

A condition counts the window's events of `types` (or, with `distinct: device|ip|country|
payment|item`, the distinct values of that field) within `within_s` seconds of the scored event
(default: the whole window), and compares with `at_least` and/or `at_most`.

Thresholds per segment, and allow / deny lists (docs/lists.md):

```yaml
segments:                          # the first segment that matches the scored event and names
  - id: br_new_payment             # a head's threshold decides that head
    when:                          # every key must hold
      country: [BR, AR]            # any string field of the event: one value or a list
      new_payment_method: true     # derived from the window: new_payment_method, new_device,
    thresholds: {fraud: 0.55}      #   new_country; channel (mobile, desktop, bot, unknown)
  - id: big_baskets
    when: {amount: {at_least: 500}, ip: [10.0.0.0/8]}   # numbers: at_least/at_most; ip: CIDRs
    thresholds: {fraud: 0.9, abnormal_click: 0.95}
lists: [lists.txt]                 # allow / deny list files, relative to this file (stream.lists)
```

What the decision API (`riskstream decide serve`, docs/decide.md) makes of a model head's alert;
the worker ignores it:

```yaml
decide:
  fraud: {review: 0.6, block: 0.9}   # an alert scoring ≥ block blocks, ≥ review is a review,
  abnormal_click: {block: 0.97}      #   under review allows; review defaults to every alert
```
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt
import yaml

from events import LABELS, EncodingSpec, Event
from events.contract import OPTIONAL_FIELDS, SEVERITIES, AlertType, Severity
from events.window import Records, concat_records, records_ts_ms
from stream.exceptions import RulesError
from stream.lists import ListSet, load_lists

__all__ = [
    "CHANNELS",
    "Condition",
    "DecideCuts",
    "Rule",
    "RuleSet",
    "RulesFile",
    "Segment",
    "SegmentTest",
    "channel",
    "load_rules",
    "parse_rules",
]

log = logging.getLogger(__name__)

Distinct = Literal["device", "ip", "country", "payment", "item"]
_DISTINCT: Final = ("device", "ip", "country", "payment", "item")


@dataclass(frozen=True)
class Condition:
    """Count events of `types` (or distinct values of a field) in the last `within_s`."""

    types: tuple[str, ...] = ()
    distinct: Distinct | None = None
    at_least: int | None = None
    at_most: int | None = None
    within_s: float | None = None

    def holds(self, window: Records, ts_ms: Any, type_codes: tuple[int, ...]) -> bool:
        """Evaluate on one window (`ts_ms`: its records' times)."""
        keep = np.ones(len(window), dtype=bool)
        if self.within_s is not None and len(window):
            keep &= ts_ms >= ts_ms[-1] - self.within_s * 1000
        if type_codes:
            keep &= np.isin(window["type"], type_codes)
        if self.distinct is not None:
            values = window[self.distinct][keep]
            count = int(np.unique(values[values > 0]).size)
        else:
            count = int(keep.sum())
        if self.at_least is not None and count < self.at_least:
            return False
        return self.at_most is None or count <= self.at_most


@dataclass(frozen=True)
class Rule:
    """Raise `alert` when every condition holds."""

    rule_id: str
    alert: AlertType
    severity: Severity
    conditions: tuple[Condition, ...]
    type_codes: tuple[tuple[int, ...], ...]  # per condition, resolved against the spec

    def fires(self, window: Records) -> bool:
        """True when every condition holds on `window`."""
        ts = records_ts_ms(window)
        return all(
            c.holds(window, ts, codes)
            for c, codes in zip(self.conditions, self.type_codes, strict=True)
        )

    def describe(self) -> str:
        """One line for the alert's reason."""
        parts = []
        for c in self.conditions:
            what = f"distinct {c.distinct}" if c.distinct else "+".join(c.types) or "events"
            bounds = []
            if c.at_least is not None:
                bounds.append(f"≥ {c.at_least}")
            if c.at_most is not None:
                bounds.append(f"≤ {c.at_most}")
            span = f" in {c.within_s:g} s" if c.within_s is not None else ""
            parts.append(f"{what} {' and '.join(bounds)}{span}")
        return f"rule {self.rule_id}: " + "; ".join(parts)


@dataclass(frozen=True)
class DecideCuts:
    """The decision API's cuts on a model head's alert score: `block` and above blocks, from
    `review` up (every alert when None) is a review, below it allows."""

    review: float | None = None
    block: float | None = None

    def decide(self, score: float) -> Literal["allow", "review", "block"]:
        """What an alert of this head with `score` decides.

        >>> DecideCuts(review=0.6, block=0.9).decide(0.95), DecideCuts(0.6, 0.9).decide(0.5)
        ('block', 'allow')
        """
        if self.block is not None and score >= self.block:
            return "block"
        return "review" if self.review is None or score >= self.review else "allow"


@dataclass(frozen=True)
class RuleSet:
    """Parsed rules and their version (sha256 of the file's bytes, 12 hex)."""

    rules: tuple[Rule, ...]
    version: str
    segments: tuple[Segment, ...] = ()
    list_paths: tuple[str, ...] = ()  # as written in the file (relative to it)
    lists: ListSet = field(default_factory=ListSet)
    decide: dict[str, DecideCuts] = field(default_factory=dict)  # per head (decision API)

    def thresholds(
        self, events: Sequence[Event], windows: Sequence[Records], bundle: dict[str, float]
    ) -> tuple[npt.NDArray[np.float64], list[list[Segment | None]]]:
        """Per event and head (columns in `LABELS` order): the threshold that applies, and the
        segment it came from (None: the bundle's). The first matching segment that names a
        head decides that head."""
        thr = np.tile(np.array([bundle[h] for h in LABELS], dtype=np.float64), (len(events), 1))
        chosen: list[list[Segment | None]] = [[None] * len(LABELS) for _ in events]
        if not self.segments:
            return thr, chosen
        for i, (ev, window) in enumerate(zip(events, windows, strict=True)):
            open_heads = set(LABELS)
            for seg in self.segments:
                heads = open_heads & seg.thresholds.keys()
                if not heads or not seg.matches(ev, window):
                    continue
                for head in heads:
                    h = LABELS.index(head)
                    thr[i, h] = seg.thresholds[head]
                    chosen[i][h] = seg
                open_heads -= heads
                if not open_heads:
                    break
        return thr, chosen

    def firing(self, window: Records) -> list[Rule]:
        """The rules that fire on `window`."""
        return [r for r in self.rules if r.fires(window)]

    def firing_batch(self, windows: Sequence[Records]) -> list[list[Rule]]:
        """`firing` of each window, computed over the whole batch at once: a few numpy calls
        per condition instead of a dozen per window and condition (measured: rules took 29 %
        of a batch's time evaluated window by window)."""
        if not self.rules:
            return [[] for _ in windows]
        lengths = np.fromiter((len(w) for w in windows), np.int64, len(windows))
        records = concat_records(windows)
        segment = np.repeat(np.arange(len(windows)), lengths)
        ts = records_ts_ms(records)
        last_ts = ts[np.maximum(np.cumsum(lengths) - 1, 0)][segment] if len(ts) else ts
        fired = np.ones((len(self.rules), len(windows)), dtype=bool)
        for r, rule in enumerate(self.rules):
            for cond, codes in zip(rule.conditions, rule.type_codes, strict=True):
                keep = np.ones(len(records), dtype=bool)
                if cond.within_s is not None:
                    keep &= ts >= last_ts - cond.within_s * 1000
                if codes:
                    keep &= np.isin(records["type"], codes)
                if cond.distinct is None:
                    count = np.bincount(segment[keep], minlength=len(windows))
                else:
                    values = records[cond.distinct].astype(np.int64)
                    keep &= values > 0
                    pairs = np.unique(np.stack([segment[keep], values[keep]]), axis=1)
                    count = np.bincount(pairs[0], minlength=len(windows))
                if cond.at_least is not None:
                    fired[r] &= count >= cond.at_least
                if cond.at_most is not None:
                    fired[r] &= count <= cond.at_most
        return [[self.rules[r] for r in np.flatnonzero(fired[:, w])] for w in range(len(windows))]


#: Lists files larger than this (all together; ~13,000 entries) are re-read in a thread beside
#: the batches, smaller ones within the batch that sees the change.
BACKGROUND_LOAD_BYTES: Final = 1 << 20

#: Fields a segment may test besides the event's own: facts of the scored event against its
#: window (true when the event's value was not seen earlier in the window), and the channel.
DERIVED_FLAGS: Final = {"new_payment_method": "payment", "new_device": "device",
                        "new_country": "country"}  # fmt: skip
CHANNELS: Final = ("mobile", "desktop", "bot", "unknown")
_STRING_FIELDS: Final = ("type", *(k for k, (kind, _) in OPTIONAL_FIELDS.items()
                                   if kind in ("str", "country")))  # fmt: skip
_NUMBER_FIELDS: Final = tuple(k for k, (kind, _) in OPTIONAL_FIELDS.items()
                              if kind in ("amount", "count"))  # fmt: skip
_BOT_MARKS: Final = ("bot", "crawler", "spider", "headless", "curl", "python-requests")
_MOBILE_MARKS: Final = ("mobile", "android", "iphone", "ipad")


def channel(user_agent: str | None) -> str:
    """The event's channel from its user agent: mobile, desktop, bot or unknown (none).

    >>> channel("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"), channel(None)
    ('mobile', 'unknown')
    >>> channel("Googlebot/2.1"), channel("Mozilla/5.0 (X11; Linux x86_64)")
    ('bot', 'desktop')
    """
    if not user_agent:
        return "unknown"
    ua = user_agent.lower()
    if any(m in ua for m in _BOT_MARKS):
        return "bot"
    return "mobile" if any(m in ua for m in _MOBILE_MARKS) else "desktop"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SegmentTest:
    """One key of a segment's `when`: a field's value among `values` (strings), inside one of
    `nets` (ip), within `at_least`/`at_most` (numbers), or a derived flag equal to `flag`."""

    name: str
    values: frozenset[str] = frozenset()
    nets: tuple[Network, ...] = ()
    at_least: float | None = None
    at_most: float | None = None
    flag: bool | None = None

    def holds(self, event: Event, window: Records) -> bool:
        """Whether the scored `event` (the last record of `window`) passes."""
        if self.flag is not None:
            column = DERIVED_FLAGS[self.name]
            if not len(window):
                return False
            values = window[column]
            last = values[-1]
            new = bool(last > 0 and not (values[:-1] == last).any())
            return new is self.flag
        if self.name == "channel":
            return channel(event.user_agent) in self.values
        value = getattr(event, self.name)
        if value is None:
            return False
        if self.nets:
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                return False
            return any(addr in net for net in self.nets)
        if self.name in _NUMBER_FIELDS:
            if self.at_least is not None and value < self.at_least:
                return False
            return self.at_most is None or value <= self.at_most
        return str(value) in self.values

    def describe(self) -> str:
        if self.flag is not None:
            return self.name if self.flag else f"not {self.name}"
        if self.nets:
            return f"{self.name} in {', '.join(map(str, self.nets))}"
        if self.name in _NUMBER_FIELDS:
            bounds = []
            if self.at_least is not None:
                bounds.append(f"≥ {self.at_least:g}")
            if self.at_most is not None:
                bounds.append(f"≤ {self.at_most:g}")
            return f"{self.name} {' and '.join(bounds)}"
        return f"{self.name} in {', '.join(sorted(self.values))}"


@dataclass(frozen=True)
class Segment:
    """Events passing every test get `thresholds` (per head) instead of the bundle's."""

    segment_id: str
    tests: tuple[SegmentTest, ...]
    thresholds: dict[str, float]
    line: int = 0

    def matches(self, event: Event, window: Records) -> bool:
        return all(t.holds(event, window) for t in self.tests)

    def describe(self) -> str:
        return f"segment {self.segment_id} ({'; '.join(t.describe() for t in self.tests)})"


def _segment_test(name: Any, raw: Any, where: str) -> SegmentTest:
    if not isinstance(name, str):
        raise RulesError(f"{where}: a field name must be a string")
    where = f"{where}.{name}"
    if name in DERIVED_FLAGS:
        if type(raw) is not bool:
            raise RulesError(f"{where}: must be true or false")
        return SegmentTest(name, flag=raw)
    if name in _NUMBER_FIELDS:
        if not isinstance(raw, dict) or not raw or set(raw) - {"at_least", "at_most"}:
            raise RulesError(f"{where}: a number field takes {{at_least: x, at_most: y}}")
        for key, v in raw.items():
            if type(v) not in (int, float) or not np.isfinite(v):
                raise RulesError(f"{where}.{key}: must be a number")
        return SegmentTest(name, at_least=raw.get("at_least"), at_most=raw.get("at_most"))
    if name not in (*_STRING_FIELDS, "channel"):
        known = ", ".join((*_STRING_FIELDS, *_NUMBER_FIELDS, *DERIVED_FLAGS, "channel"))
        raise RulesError(f"{where}: unknown field (known: {known})")
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise RulesError(f"{where}: must be a non-empty string or list of strings")
    if name == "channel" and (bad := [v for v in values if v not in CHANNELS]):
        raise RulesError(f"{where}: unknown channel {bad[0]!r} (one of {', '.join(CHANNELS)})")
    if name == "ip":
        nets = []
        for v in values:
            try:
                nets.append(ipaddress.ip_network(v, strict=True))
            except ValueError as exc:
                raise RulesError(f"{where}: invalid CIDR {v!r} ({exc})") from None
        return SegmentTest(name, nets=tuple(nets))
    return SegmentTest(name, values=frozenset(values))


def _segment(raw: Any, where: str, seen: set[str], line: int) -> Segment:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a mapping")
    unknown = set(raw) - {"id", "when", "thresholds"}
    if unknown:
        raise RulesError(f"{where}.{sorted(unknown)[0]}: unknown segment key")
    seg_id = raw.get("id")
    if not isinstance(seg_id, str) or not seg_id or seg_id in seen:
        raise RulesError(f"{where}.id: must be a unique non-empty string")
    seen.add(seg_id)
    where = f"{where} ({seg_id})"
    when = raw.get("when")
    if not isinstance(when, dict) or not when:
        raise RulesError(f"{where}.when: must be a non-empty mapping of field: condition")
    tests = tuple(_segment_test(k, v, f"{where}.when") for k, v in when.items())
    thresholds = raw.get("thresholds")
    if not isinstance(thresholds, dict) or not thresholds:
        raise RulesError(f"{where}.thresholds: must map a head ({', '.join(LABELS)}) to 0..1")
    for head, value in thresholds.items():
        if head not in LABELS:
            raise RulesError(f"{where}.thresholds.{head}: unknown head ({', '.join(LABELS)})")
        if type(value) not in (int, float) or not 0 < value <= 1:
            raise RulesError(f"{where}.thresholds.{head}: must be a number in (0, 1]")
    return Segment(seg_id, tests, {h: float(v) for h, v in thresholds.items()}, line)


def _item_lines(text: str | bytes, key: str) -> list[int]:
    """The line (1-based) of each item of the top-level list `key`, where YAML composes."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for k, v in root.value:
        if getattr(k, "value", None) == key and isinstance(v, yaml.SequenceNode):
            return [n.start_mark.line + 1 for n in v.value]
    return []


def _condition(raw: Any, where: str, spec: EncodingSpec) -> tuple[Condition, tuple[int, ...]]:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: a condition must be a mapping")
    unknown = set(raw) - {"types", "distinct", "at_least", "at_most", "within_s"}
    if unknown:
        raise RulesError(f"{where}.{sorted(unknown)[0]}: unknown condition key")
    raw_types = raw.get("types") or []
    if not isinstance(raw_types, list) or not all(isinstance(t, str) for t in raw_types):
        raise RulesError(f"{where}.types: must be a list of event types")
    types = tuple(raw_types)
    bad = [t for t in types if t not in spec.event_types]
    if bad:
        raise RulesError(f"{where}.types: unknown event type {bad[0]!r}")
    distinct = raw.get("distinct")
    if distinct is not None and distinct not in _DISTINCT:
        raise RulesError(f"{where}.distinct: must be one of {', '.join(_DISTINCT)}")
    for key in ("at_least", "at_most"):
        if key in raw and (type(raw[key]) is not int or raw[key] < 0):
            raise RulesError(f"{where}.{key}: must be a non-negative integer")
    if "at_least" not in raw and "at_most" not in raw:
        raise RulesError(f"{where}: needs at_least or at_most")
    within = raw.get("within_s")
    if within is not None and (type(within) not in (int, float) or not 0 < within < float("inf")):
        raise RulesError(f"{where}.within_s: must be a positive number of seconds")
    cond = Condition(types, distinct, raw.get("at_least"), raw.get("at_most"), within)
    return cond, tuple(spec.event_types.index(t) for t in types)


def parse_rules(text: str | bytes, spec: EncodingSpec, source: str = "rules") -> RuleSet:
    """Parse and check a rules file; errors name the rule and the key."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:  # one line: where, and the parser's problem
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RulesError(f"{source}: not valid YAML{at} ({problem})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise RulesError(f"{source}: must be a mapping with a 'rules' list")
    unknown = set(data) - {"rules", "segments", "lists", "decide"}
    if unknown:
        raise RulesError(f"{source}: unknown key {sorted(map(str, unknown))[0]!r} "
                         "(known: rules, segments, lists, decide)")  # fmt: skip
    decide = _decide_cuts(data.get("decide"), source)
    raw_segments = data.get("segments") or []
    if not isinstance(raw_segments, list):
        raise RulesError(f"{source}: segments must be a list")
    lines = _item_lines(text, "segments")
    seen_segments: set[str] = set()
    segments = []
    for i, raw in enumerate(raw_segments):
        line = lines[i] if i < len(lines) else 0
        at = f"{source}:{line}" if line else source
        segments.append(_segment(raw, f"{at}: segments[{i}]", seen_segments, line))
    raw_lists = data.get("lists") or []
    if isinstance(raw_lists, str):
        raw_lists = [raw_lists]
    if not isinstance(raw_lists, list) or not all(isinstance(p, str) and p for p in raw_lists):
        raise RulesError(f"{source}: lists must be a file name or a list of file names")
    rules: list[Rule] = []
    seen: set[str] = set()
    rule_lines = _item_lines(text, "rules")
    for i, raw in enumerate(data.get("rules", [])):
        at = f"{source}:{rule_lines[i]}" if i < len(rule_lines) else source
        where = f"{at}: rules[{i}]"
        if not isinstance(raw, dict):
            raise RulesError(f"{where}: must be a mapping")
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not rule_id or rule_id in seen:
            raise RulesError(f"{where}.id: must be a unique non-empty string")
        seen.add(rule_id)
        where = f"{at}: rule {rule_id}"
        if raw.get("alert") not in LABELS:
            raise RulesError(f"{where}.alert: must be one of {', '.join(LABELS)}")
        severity = raw.get("severity", "high")
        if severity not in SEVERITIES:
            raise RulesError(f"{where}.severity: must be one of {', '.join(SEVERITIES)}")
        conditions = raw.get("all")
        if not isinstance(conditions, list) or not conditions:
            raise RulesError(f"{where}.all: must be a non-empty list of conditions")
        parsed = [_condition(c, f"{where}.all[{j}]", spec) for j, c in enumerate(conditions)]
        rules.append(
            Rule(
                rule_id,
                cast(AlertType, raw["alert"]),
                cast(Severity, severity),
                tuple(c for c, _ in parsed),
                tuple(codes for _, codes in parsed),
            )
        )
    raw_bytes = text.encode() if isinstance(text, str) else text
    version = "rules-" + hashlib.sha256(raw_bytes).hexdigest()[:12]
    return RuleSet(tuple(rules), version, tuple(segments), tuple(raw_lists), decide=decide)


def _decide_cuts(raw: Any, source: str) -> dict[str, DecideCuts]:
    """The `decide:` section: per head, `review` and/or `block` in [0, 1], review ≤ block."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: decide must be a mapping of heads")
    cuts: dict[str, DecideCuts] = {}
    for head, spec in raw.items():
        where = f"{source}: decide.{head}"
        if head not in LABELS:
            raise RulesError(f"{where}: unknown head ({', '.join(LABELS)})")
        if not isinstance(spec, dict) or not spec or set(spec) - {"review", "block"}:
            raise RulesError(f"{where}: must be a mapping of review and/or block")
        values: dict[str, float] = {}
        for key, value in spec.items():
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not 0.0 <= float(value) <= 1.0:
                raise RulesError(f"{where}.{key}: must be a number in [0, 1], got {value!r}")
            values[key] = float(value)
        if values.get("review", 0.0) > values.get("block", 1.0):
            raise RulesError(f"{where}: review {values['review']} is above block {values['block']}")
        cuts[str(head)] = DecideCuts(values.get("review"), values.get("block"))
    return cuts


def list_files(path: Path, ruleset: RuleSet) -> list[Path]:
    """The lists files a rules file at `path` names, resolved against its folder."""
    return [path.parent / p for p in ruleset.list_paths]


def load_rules(path: Path, spec: EncodingSpec) -> RuleSet:
    """Read and parse a rules file, and the lists files it names."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    ruleset = parse_rules(text, spec, str(path))
    if ruleset.list_paths:
        ruleset = replace(ruleset, lists=load_lists(list_files(path, ruleset)))
    return ruleset


class RulesFile:
    """A rules file watched for changes: `current()` re-reads it when its mtime or size moved.

    A file that cannot be used, for whatever reason (unreadable, not YAML, a wrong type
    anywhere, even a bug of the parser), is refused with one log line per change of the file
    and counted in `failures`; the previous rules keep running. The lists files it names
    (`lists:`) are watched the same way: a changed one is re-read alone, and a bad one is
    refused (file, line, reason) while the previous lists keep serving.
    """

    def __init__(self, path: Path | None, spec: EncodingSpec) -> None:
        self.path = path
        self.spec = spec
        self.rules = RuleSet((), "rules-none")
        self.failures = 0
        self._stamp: tuple[int, int] | None = None
        self._list_stamps: tuple[tuple[int, int] | None, ...] = ()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._loading: Future[None] | None = None
        if path is not None:
            self._list_stamps = self._list_stats()  # before reading: a change meanwhile reloads
            self.rules = load_rules(path, spec)  # a bad file at start-up is an error
            self._stamp = self._stat()
            self._list_stamps = self._list_stats()

    def _stat(self, path: Path | None = None) -> tuple[int, int] | None:
        path = path or self.path
        assert path is not None
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _list_stats(self) -> tuple[tuple[int, int] | None, ...]:
        assert self.path is not None
        return tuple(self._stat(p) for p in list_files(self.path, self.rules))

    def _refused(self, what: Path | str, exc: Exception, keeps: str) -> None:
        self.failures += 1
        why = str(exc) if isinstance(exc, RulesError) else f"{type(exc).__name__}: {exc}"
        log.error("%s refused, %s keep running: %s", what, keeps, why)

    def _reload_lists(self) -> None:
        """Re-read the lists files when one changed; a bad one keeps the old lists."""
        assert self.path is not None
        stamps = self._list_stats()
        if stamps == self._list_stamps or any(s is None for s in stamps):
            return  # a file missing for a moment (being replaced) is read at its return
        self._list_stamps = stamps
        paths = list_files(self.path, self.rules)
        if sum(s[1] for s in stamps if s is not None) <= BACKGROUND_LOAD_BYTES:
            self._lists_loaded(paths)
            return
        # A large file (a million entries: seconds to parse) is read beside the batches, which
        # go on with the old lists; the next batch after it is read gets the new ones.
        if self._loading is not None and not self._loading.done():
            self._list_stamps = ()  # still reading the previous change: look again after it
            return
        self._loading = self._executor().submit(self._lists_loaded, paths)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="lists-reload")
        return self._pool

    def _lists_loaded(self, paths: list[Path]) -> None:
        try:
            lists = load_lists(paths)
        except Exception as exc:  # any bad file is refused, never fatal to the batch
            self._refused("lists file", exc, f"lists {self.rules.lists.version}")
            return
        with self._lock:
            self.rules = replace(self.rules, lists=lists)
        log.info("lists reloaded: %s (%d entries)", lists.version, lists.entries)

    def current(self) -> RuleSet:
        """The rules to apply now (reloaded if the file changed and parses)."""
        if self.path is None:
            return self.rules
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                rules = load_rules(self.path, self.spec)
                self._list_stamps = tuple(self._stat(p) for p in list_files(self.path, rules))
                with self._lock:
                    self.rules = rules
                log.info("rules reloaded from %s: %s (%d rules, %d segments, %d list entries)",
                         self.path, rules.version, len(rules.rules), len(rules.segments),
                         rules.lists.entries)  # fmt: skip
            except Exception as exc:  # any bad file is refused, never fatal to the batch
                self._refused(f"rules file {self.path}", exc, f"rules {self.rules.version}")
        elif self.rules.list_paths:
            self._reload_lists()
        return self.rules
