"""`riskstream backtest`: history replayed through the stream's own code path, and what it would
have raised, measured against the labels.

Not a re-implementation: the worker's `stream.processor.Processor` runs every batch, with the
bundle loaded by the worker's `stream.model_slot.ModelSlot` (verified, probed), the worker's
`stream.rules.RulesFile`, and the worker's defaults (`stream.settings.WorkerSettings`: cooldown,
allowed lateness, occlusion). Only the two stores differ: the windows are an
`events.InMemoryWindowStore` (the reference the Redis script is tested against) and the
cooldowns are held in memory on the events' clock — live, the worker's clock is the wall clock
and events arrive in real time; replayed, the history's own time stands in for it. A batch's
"now" (the alerts' `detected_at`) is the newest event time seen so far.

Events are read in file order (a user's partition order), `batch_size` at a time. Events before
`--since` are replayed too, so that windows and cooldowns are warm when the period opens; only
alerts on events inside [since, until) are reported. Events from `--until` on are not read.

Analysts' decisions and chargebacks (`--feedback`, the feedback JSON lines `riskstream train`
reads) are read by the trainer's own reader (`training.data`), with the bundle's session gap:
a confirmed decision is a positive episode over its span, a chargeback one from its session's
start to the purchase; they count as label episodes do. A false positive is a known negative:
no episode, so an alert on it counts against precision, as any alert outside an episode.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from tqdm import tqdm

from events import LABELS, InMemoryWindowStore, Label, WindowPolicy, parse_label, parse_ts_ms
from events.exceptions import InvalidLabel
from events.terminal import bars_wanted
from events.window import AppendResult
from riskstream.tools.exceptions import ToolError
from stream.cooldowns import CooldownStore
from stream.messages import Incoming
from stream.model_slot import ModelSlot
from stream.processor import Outcome, Processor
from stream.rules import RulesFile
from stream.settings import WorkerSettings

__all__ = [
    "BacktestOptions",
    "BacktestResult",
    "FeedbackLabels",
    "MemoryCooldowns",
    "MemoryWindows",
    "merge_labels",
    "read_feedback",
    "read_labels",
    "run_backtest",
]

log = logging.getLogger(__name__)

DAY_MS: Final = 86_400_000
_DEFAULTS: Final = WorkerSettings.model_fields


def _default(name: str) -> Any:
    return _DEFAULTS[name].default


class MemoryWindows:
    """`InMemoryWindowStore` with the batch method the processor calls (same results as
    `RedisWindowStore.append_batch`: each item appended in turn)."""

    def __init__(self, policy: WindowPolicy, *, lateness_s: float = 0.0) -> None:
        self._store = InMemoryWindowStore(policy, lateness_s=lateness_s)

    @property
    def policy(self) -> WindowPolicy:
        return self._store.policy

    def append_batch(self, items: Sequence[tuple[str, bytes]]) -> list[AppendResult]:
        return [self._store.append(user, record) for user, record in items]

    def get(self, user_id: str) -> bytes:
        return self._store.get(user_id)


class MemoryCooldowns(CooldownStore):
    """The worker's cooldowns in memory, on a clock the caller sets (`clock_ms`): a pair held
    until `cooldown_s` after the alert that started it, in event time."""

    def __init__(self, cooldown_s: int) -> None:  # no Redis: nothing of the parent's state
        if type(cooldown_s) is not int or cooldown_s < 0:
            raise ValueError(f"cooldown_s: must be a non-negative integer, got {cooldown_s!r}")
        self.cooldown_s = cooldown_s
        self.clock_ms = 0
        self._until: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"MemoryCooldowns(cooldown_s={self.cooldown_s})"

    def held(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        if self.cooldown_s == 0:
            return [False] * len(pairs)
        return [self._until.get(p, -1) > self.clock_ms for p in pairs]

    def start(self, alerted: Sequence[tuple[str, str, str]]) -> None:
        until = self.clock_ms + self.cooldown_s * 1000
        for user_id, alert_type, _event in alerted:
            if self.cooldown_s:
                self._until[(user_id, alert_type)] = until

    def ping(self) -> None:
        return None


@dataclass(frozen=True)
class BacktestOptions:
    """What a backtest replays with (the worker's defaults unless given)."""

    since_ms: int | None = None
    until_ms: int | None = None
    batch_size: int = 512
    cooldown_s: int = _default("cooldown_s")
    lateness_s: float = _default("allowed_lateness_s")
    occlusion_top: int = _default("occlusion_top")
    device: str = "cpu"
    variant: str | None = None
    threads: int | None = None
    progress: bool = True


@dataclass
class BacktestResult:
    """The alerts (in the topic's schema), where each came from, and the report."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # "model" or "rule", per alert
    report: dict[str, Any] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)  # users with events in the period
    feedback: FeedbackLabels | None = None  # with `feedback=` given to `run_backtest`


@dataclass(frozen=True)
class FeedbackLabels:
    """What `--feedback` adds: positive episodes (confirmed decisions, chargebacks) and how
    many lines were known negatives (false positives) or named an order no purchase has."""

    episodes: list[Label]
    known_negatives: int
    unknown_orders: int

    def summary(self, path: Path) -> dict[str, Any]:
        kinds: dict[str, int] = defaultdict(int)
        for lab in self.episodes:
            kinds[lab.kind or "unknown"] += 1
        return {
            "path": str(path),
            "episodes": len(self.episodes),
            "episodes_by_kind": dict(sorted(kinds.items())),
            "known_negatives": self.known_negatives,
            "unknown_orders": self.unknown_orders,
        }


def _lines(path: Path, progress: bool) -> Iterator[bytes]:
    """The file's non-empty lines, with a byte progress bar on a terminal; for an events
    dataset (`riskstream ingest`), its events as JSON in the order of their original lines."""
    from training.parquet_source import ParquetSource, is_dataset

    if is_dataset(path):
        source = ParquetSource(path)
        total = int(source.manifest.get("events", 0)) or None
        with tqdm(
            total=total, unit="ev", desc="backtest", disable=not bars_wanted(progress)
        ) as bar:
            for row in source.contract_rows():
                bar.update(1)
                yield orjson.dumps(row)
        return
    size = path.stat().st_size
    with (
        path.open("rb") as fh,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc="backtest",
            disable=not bars_wanted(progress),
        ) as bar,
    ):
        for line in fh:
            bar.update(len(line))
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _peek(line: bytes) -> tuple[bytes | None, int | None]:
    """The key a producer would give the line (its user_id) and its time, where readable; what
    is not is left to the processor, which refuses it as the worker does."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if type(obj) is not dict:
        return None, None
    user = obj.get("user_id")
    key = user.encode() if type(user) is str else None
    try:
        ts = parse_ts_ms(obj.get("ts"))
    except (ValueError, TypeError):
        ts = None
    return key, ts


def read_labels(path: Path) -> list[Label]:
    """Every label of a JSON-lines file; a bad line is refused with its number."""
    out: list[Label] = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(parse_label(line))
            except InvalidLabel as exc:
                raise ToolError(f"{path}:{lineno}: {exc}") from None
    return out


def read_feedback(
    path: Path, events: Path, *, session_gap_s: int, spec: Any = None
) -> FeedbackLabels:
    """The episodes a feedback file gives, read as `riskstream train` reads it
    (`training.data.load_corpus`: a chargeback's episode runs from its session's start, by
    `session_gap_s` of inactivity, to the purchase that carries its order id, so the events
    are read too); a bad line is refused with its file and line number."""
    from training.data import load_corpus  # numpy and the corpus reader: no torch
    from training.exceptions import DataError

    try:
        corpus = load_corpus(events, None, path, spec=spec, session_gap_s=session_gap_s,
                             progress=False, kept_labels=False)  # fmt: skip
    except DataError as exc:
        raise ToolError(f"--feedback: {exc}") from None
    return FeedbackLabels(list(corpus.episodes), len(corpus.negatives), corpus.unknown_orders)


def merge_labels(labels: list[Label] | None, more: list[Label] | None) -> list[Label] | None:
    """Label episodes and feedback episodes together, an episode given by both counted once
    (same user, head and span); None when neither was given."""
    if labels is None and more is None:
        return None
    seen: set[tuple[str, str, int, int]] = set()
    out: list[Label] = []
    for lab in [*(labels or []), *(more or [])]:
        key = (lab.user_id, lab.label, lab.start_ms, lab.end_ms)
        if key not in seen:
            seen.add(key)
            out.append(lab)
    return out


def run_backtest(
    bundle: Path,
    events: Path,
    rules: Path | None,
    options: BacktestOptions,
    *,
    feedback: Path | None = None,
) -> BacktestResult:
    """Replay `events` through the worker's processor; the alerts it would have raised. With
    `feedback`, its episodes too (`result.feedback`, read with the bundle's session gap)."""
    o = options
    if o.since_ms is not None and o.until_ms is not None and o.since_ms >= o.until_ms:
        raise ToolError("--since: must be before --until")
    began = time.perf_counter()
    slot = ModelSlot(
        bundle,
        lambda policy: MemoryWindows(policy, lateness_s=o.lateness_s),
        o.device,  # type: ignore[arg-type]
        variant=o.variant,
        threads=o.threads,
        spin=False,
    )
    serving = slot.current
    rules_file = RulesFile(rules, serving.bundle.spec)
    cooldowns = MemoryCooldowns(o.cooldown_s)
    processor = Processor(rules_file, cooldowns, occlusion_top=o.occlusion_top)
    log.info(
        "backtest: loaded model %s (%s on %s), rules %s, in %.1f s",
        serving.model_version, serving.bundle.variant, serving.bundle.provider,
        rules_file.current().version if rules is not None else "none",
        time.perf_counter() - began,
    )  # fmt: skip
    result = BacktestResult()
    if feedback is not None:  # before the replay: a bad line is refused at once
        result.feedback = read_feedback(
            feedback, events, session_gap_s=serving.bundle.manifest.session_gap_s,
            spec=serving.bundle.spec,
        )  # fmt: skip
        log.info(
            "backtest: %s: %d episodes (%d known negatives, %d unknown orders)",
            feedback, len(result.feedback.episodes), result.feedback.known_negatives,
            result.feedback.unknown_orders,
        )  # fmt: skip
    clock = 0
    read = in_period = refused = 0
    first_ms: int | None = None
    last_ms: int | None = None
    users_in_period: set[str] = set()
    batch: list[Incoming] = []
    batch_max = 0

    def run_batch() -> None:
        nonlocal clock, refused
        now = max(clock, batch_max)
        clock = now
        cooldowns.clock_ms = now
        out: Outcome = processor.process(batch, serving, now_ms=now)
        cooldowns.start(out.cooldowns)  # live: once the broker has the alerts
        refused += len(out.dead_letters)
        for (_user, alert), (_type, source) in zip(out.alerts, out.alert_sources, strict=True):
            ts = parse_ts_ms(alert["event_ts"])
            if o.since_ms is None or ts >= o.since_ms:
                result.alerts.append(alert)
                result.sources.append(source)
        batch.clear()

    began = time.perf_counter()
    for offset, line in enumerate(_lines(events, o.progress)):
        key, ts = _peek(line)
        if ts is not None and o.until_ms is not None and ts >= o.until_ms:
            continue
        read += 1
        if ts is not None:
            batch_max = max(batch_max, ts)
            if (o.since_ms is None or ts >= o.since_ms) and key is not None:
                in_period += 1
                users_in_period.add(key.decode())
                first_ms = ts if first_ms is None else min(first_ms, ts)
                last_ms = ts if last_ms is None else max(last_ms, ts)
        batch.append(Incoming(line, key, "events", 0, offset, ts))
        if len(batch) >= o.batch_size:
            run_batch()
    if batch:
        run_batch()
    seconds = time.perf_counter() - began
    if in_period == 0 or first_ms is None or last_ms is None:
        raise ToolError(
            f"no events in the period{_period_text(o)} in {events}: nothing to backtest"
        )
    log.info(
        "backtest: replayed %d events (%d in the period, %d refused) in %.1f s (%.0f events/s): "
        "%d alerts",
        read, in_period, refused, seconds, read / max(seconds, 1e-9), len(result.alerts),
    )  # fmt: skip
    start = o.since_ms if o.since_ms is not None else first_ms
    end = o.until_ms if o.until_ms is not None else last_ms + 1
    result.report = {
        "bundle": str(bundle),
        "model_version": serving.model_version,
        "variant": serving.bundle.variant,
        "rules": str(rules) if rules is not None else None,
        "rules_version": rules_file.current().version if rules is not None else None,
        "events": str(events),
        "period": {"start_ms": start, "end_ms": end, "days": max(end - start, 1) / DAY_MS},
        "cooldown_s": o.cooldown_s,
        "replayed": read,
        "in_period": in_period,
        "refused": refused,
        "users": len(users_in_period),
        "seconds": round(seconds, 3),
        "events_per_s": round(read / max(seconds, 1e-9), 1),
        "alerts": len(result.alerts),
    }
    result.users = users_in_period
    if feedback is not None and result.feedback is not None:
        result.report["feedback"] = result.feedback.summary(feedback)
    return result


def _period_text(o: BacktestOptions) -> str:
    from events import format_ts_ms

    parts = []
    if o.since_ms is not None:
        parts.append(f" from {format_ts_ms(o.since_ms)}")
    if o.until_ms is not None:
        parts.append(f" until {format_ts_ms(o.until_ms)}")
    return "".join(parts)


def _episode_matches(label: Label, ts: int) -> bool:
    return label.start_ms <= ts <= label.end_ms


def measure(result: BacktestResult, labels: list[Label] | None) -> dict[str, Any]:
    """Per source (each model head, each rule, each segment threshold and deny list that
    decided alerts, and each alert type overall): alerts, alerts per
    day, users alerted, normal users alerted per 1,000 per day and — with labels — precision,
    recall by attack kind and detection delay (first alert in an episode minus its start)."""
    rep = result.report
    days = float(rep["period"]["days"])
    start_ms = int(rep["period"]["start_ms"])
    users = int(rep["users"])
    by_user: dict[str, list[Label]] = defaultdict(list)
    for lab in labels or []:
        by_user[lab.user_id].append(lab)
    labelled = set(by_user)
    # Normal: not in any label episode (without labels, every user counts as normal).
    normal_users = users - len(labelled & result.users)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (alert, source) in enumerate(zip(result.alerts, result.sources, strict=True)):
        kind = alert["type"]
        groups[f"all:{kind}"].append(i)
        if source == "model":
            groups[f"model:{kind}"].append(i)
        elif source == "deny_list":
            groups[f"deny_list:{kind}"].append(i)
        for reason in alert["reasons"]:
            if reason.get("rule_id"):
                groups[f"rule:{reason['rule_id']}"].append(i)
            elif reason["code"] == "segment_threshold":  # "segment <id> (...): ..."
                groups[f"segment:{reason['detail'].split()[1]}"].append(i)
    for head in LABELS:  # every head appears, alerting or not
        groups.setdefault(f"model:{head}", [])
        groups.setdefault(f"all:{head}", [])
    out: dict[str, Any] = {}
    for name, idx in sorted(groups.items()):
        alerts = [result.alerts[i] for i in idx]
        kind = alerts[0]["type"] if alerts else name.split(":", 1)[1]
        row: dict[str, Any] = {
            "alerts": len(alerts),
            "alerts_per_day": len(alerts) / days,
            "users_alerted": len({a["user_id"] for a in alerts}),
        }
        per_day: dict[int, set[str]] = defaultdict(set)
        for a in alerts:
            if a["user_id"] not in labelled:
                day = (parse_ts_ms(a["event_ts"]) - start_ms) // DAY_MS
                per_day[day].add(a["user_id"])
        pairs = sum(len(s) for s in per_day.values())
        row["normal_users_alerted_per_1000_per_day"] = (
            1000.0 * pairs / (max(normal_users, 1) * max(days, 1e-9))
        )
        if labels is not None and kind in LABELS:
            row.update(_against_labels(alerts, kind, labels, by_user))
        out[name] = row
    return out


def _against_labels(
    alerts: list[dict[str, Any]],
    kind: str,
    labels: list[Label],
    by_user: dict[str, list[Label]],
) -> dict[str, Any]:
    true = 0
    first: dict[int, int] = {}  # id(episode) → first alert's event time inside it
    for a in alerts:
        ts = parse_ts_ms(a["event_ts"])
        hit = False
        for lab in by_user.get(a["user_id"], []):
            if lab.label == kind and _episode_matches(lab, ts):
                hit = True
                key = id(lab)
                first[key] = min(first.get(key, ts), ts)
        true += hit
    episodes = [lab for lab in labels if lab.label == kind]
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    delays: list[float] = []
    for lab in episodes:
        counts = by_kind[lab.kind or "unknown"]
        counts[1] += 1
        if id(lab) in first:
            counts[0] += 1
            delays.append((first[id(lab)] - lab.start_ms) / 1000)
    delays.sort()
    found = sum(c[0] for c in by_kind.values())
    return {
        "precision": true / len(alerts) if alerts else None,
        "recall": found / len(episodes) if episodes else None,
        "episodes": len(episodes),
        "episodes_detected": found,
        "recall_by_kind": {
            k: {"detected": c[0], "episodes": c[1], "recall": c[0] / c[1]}
            for k, c in sorted(by_kind.items())
        },
        "detection_delay_s": {
            "median": delays[len(delays) // 2] if delays else None,
            "p90": delays[min(len(delays) - 1, int(len(delays) * 0.9))] if delays else None,
        },
    }


def table_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per source: what the table and the report's summary show."""

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}%"

    rows = []
    for name, m in metrics.items():
        delay = (m.get("detection_delay_s") or {}).get("median")
        rows.append([
            name, f"{m['alerts']:,}", f"{m['alerts_per_day']:.1f}", f"{m['users_alerted']:,}",
            pct(m.get("precision")), pct(m.get("recall")),
            f"{m['normal_users_alerted_per_1000_per_day']:.2f}",
            "—" if delay is None else f"{delay:.0f} s",
        ])  # fmt: skip
    return rows


TABLE_HEADER: Final = [
    "source", "alerts", "per day", "users", "precision", "recall", "normal/1k/day", "delay p50",
]  # fmt: skip


def write_outputs(result: BacktestResult, metrics: dict[str, Any], out: Path) -> list[Path]:
    """alerts.jsonl (the topic's schema), report.json, report.md (the table) and report.png."""
    out.mkdir(parents=True, exist_ok=True)
    alerts = out / "alerts.jsonl"
    with alerts.open("wb") as fh:
        fh.writelines(orjson.dumps(a) + b"\n" for a in result.alerts)
    report = out / "report.json"
    report.write_bytes(
        orjson.dumps({**result.report, "by_source": metrics}, option=orjson.OPT_INDENT_2)
    )
    table = out / "report.md"
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(metrics)]
    table.write_text("\n".join(lines) + "\n")
    png = out / "report.png"
    _plot(result, metrics, png)
    return [alerts, report, table, png]


def _plot(result: BacktestResult, metrics: dict[str, Any], path: Path) -> None:
    """Alerts per day per alert type (left), precision and recall per source (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = int(result.report["period"]["start_ms"])
    days = max(1, int(-(-float(result.report["period"]["days"]) // 1)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in LABELS:
        counts = [0] * days
        for a in result.alerts:
            if a["type"] == kind:
                d = min(days - 1, max(0, (parse_ts_ms(a["event_ts"]) - start) // DAY_MS))
                counts[d] += 1
        left.plot(range(days), counts, marker="o", label=kind)
    left.set_xlabel("day of the period")
    left.set_ylabel("alerts")
    left.set_title("Alerts per day")
    left.legend()
    names = list(metrics)
    x = range(len(names))
    prec = [metrics[n].get("precision") or 0.0 for n in names]
    rec = [metrics[n].get("recall") or 0.0 for n in names]
    right.bar([i - 0.2 for i in x], prec, width=0.4, label="precision")
    right.bar([i + 0.2 for i in x], rec, width=0.4, label="recall")
    right.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
    right.set_ylim(0, 1)
    right.set_title("Against the labels")
    right.legend()
    fig.suptitle(f"Backtest of {result.report['model_version']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(a: BacktestResult, b: BacktestResult) -> dict[str, Any]:
    """The same history through A and B: per alert type, the alerts raised only by A, only by B
    and by both (matched by alert id: user, type and triggering event), with the ids."""
    out: dict[str, Any] = {}
    for kind in LABELS:
        ids_a = {x["alert_id"]: x for x in a.alerts if x["type"] == kind}
        ids_b = {x["alert_id"]: x for x in b.alerts if x["type"] == kind}
        only_a = sorted(set(ids_a) - set(ids_b))
        only_b = sorted(set(ids_b) - set(ids_a))
        both = set(ids_a) & set(ids_b)
        out[kind] = {
            "only_a": len(only_a),
            "only_b": len(only_b),
            "both": len(both),
            "users_only_a": len({ids_a[i]["user_id"] for i in only_a}),
            "users_only_b": len({ids_b[i]["user_id"] for i in only_b}),
            "only_a_ids": only_a,
            "only_b_ids": only_b,
        }
    return out
