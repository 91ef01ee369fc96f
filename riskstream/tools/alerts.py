"""Read the alerts a worker publishes: group-less (no offsets committed), every partition.

Without `follow`, reading stops once the topic is drained, i.e. after two polls in a row bring
no record. Not `end_offsets()`: Tansu's ListOffsets(latest) answers the base offset of the last
record batch + 1, short of the true end when that batch holds several records. For the same
reason `from_beginning=False` first discards whatever is left after seeking to the end,
until a poll comes back empty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Final

import orjson
from rich.table import Table
from rich.text import Text

from events.timeutil import parse_ts_ms
from riskstream.tools.common import (
    CONNECT_TIMEOUT_S,
    bootstrap_servers,
    kafka_security,
    partition_count,
)
from riskstream.tools.exceptions import ToolError
from stream.kafka_clients import kafka_config

__all__ = [
    "ALERT_TYPES",
    "AlertReader",
    "alert_json_line",
    "alerts_table",
    "iter_alert_batches",
    "read_alerts",
    "shorten",
]

log = logging.getLogger(__name__)

ALERT_TYPES: Final = ("fraud", "abnormal_click")
_EMPTY_POLLS_DRAINED: Final = 2
_REASON_WIDTH: Final = 60
_SEVERITY_STYLE: Final = {"critical": "bold red", "high": "red", "medium": "yellow", "low": ""}

Alert = dict[str, Any]


class AlertReader:
    """A group-less kafka-python consumer on every partition of the alerts topic.

    `poll()` returns `(records read, alerts kept)`: records that are not JSON objects are
    counted in `skipped`; `alert_type` keeps one type only.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "alerts",
        *,
        alert_type: str | None = None,
        from_beginning: bool = True,
        poll_ms: int = 500,
    ) -> None:
        if alert_type is not None and alert_type not in ALERT_TYPES:
            raise ToolError(f"--type: must be one of {', '.join(ALERT_TYPES)}, got {alert_type!r}")
        self.bootstrap = bootstrap_servers(bootstrap)
        self.topic = topic
        self.alert_type = alert_type
        self.poll_ms = poll_ms
        self.skipped = 0
        self.records = 0
        security = kafka_security()  # the worker's SSL/SASL settings
        # Through the admin client: no auto-create by our metadata request.
        partitions = partition_count(self.bootstrap, topic, security=security)

        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        try:
            config = kafka_config(
                self.bootstrap, security, "kafka-python",
                client_id="riskstream-alerts", group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest" if from_beginning else "latest",
                fetch_max_wait_ms=200,  # an empty poll comes back quickly
                bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
            )  # fmt: skip
            self._consumer: Any = KafkaConsumer(**config)
        except (KafkaError, OSError) as exc:
            raise ToolError(f"cannot reach the broker at {self.bootstrap} ({exc})") from None
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            self._consumer.assign(tps)
            if from_beginning:
                self._consumer.seek_to_beginning(*tps)
            else:
                self._consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the offsets now: the first poll then fetches at once
                self._consumer.position(tp)
            if not from_beginning:
                self._skip_to_true_end()
        except (KafkaError, OSError) as exc:
            self.close()
            raise ToolError(f"cannot read {topic!r} on {self.bootstrap} ({exc})") from None

    def _skip_to_true_end(self, limit_s: float = 10.0) -> None:
        """Discard what is left after `seek_to_end()` until a poll comes back empty.

        Tansu's end offset is the base offset of the last batch + 1, so "the end" can be
        short by the rest of that batch; a real Kafka broker leaves nothing to discard.
        """
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            batch = self._consumer.poll(timeout_ms=self.poll_ms)
            if not any(batch.values()):
                return

    def poll(self) -> tuple[int, list[Alert]]:
        """One poll: how many records came, and the alerts among them that pass the filter."""
        batch = self._consumer.poll(timeout_ms=self.poll_ms)
        n = 0
        kept: list[Alert] = []
        for records in batch.values():
            for record in records:
                n += 1
                try:
                    alert = orjson.loads(record.value) if record.value is not None else None
                except orjson.JSONDecodeError:
                    alert = None
                if not isinstance(alert, dict):
                    self.skipped += 1
                    log.warning(
                        "%s[%d]@%d is not an alert (not a JSON object); skipped",
                        record.topic,
                        record.partition,
                        record.offset,
                    )
                    continue
                if self.alert_type is None or alert.get("type") == self.alert_type:
                    kept.append(alert)
        self.records += n
        return n, kept

    def close(self) -> None:
        """Close the consumer (nothing was committed: no group)."""
        consumer, self._consumer = getattr(self, "_consumer", None), None
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> AlertReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def iter_alert_batches(
    reader: AlertReader,
    *,
    follow: bool = False,
    max_alerts: int | None = None,
    timeout_s: float | None = None,
) -> Iterator[list[Alert]]:
    """Non-empty batches of alerts, as they arrive.

    Stops after `max_alerts`, after `timeout_s`, or (without `follow`) once two polls in a
    row bring no record at all.
    """
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    seen = 0
    empty = 0
    while deadline is None or time.monotonic() < deadline:
        n, alerts = reader.poll()
        if max_alerts is not None:
            alerts = alerts[: max_alerts - seen]
        if alerts:
            seen += len(alerts)
            yield alerts
        if max_alerts is not None and seen >= max_alerts:
            return
        empty = empty + 1 if n == 0 else 0
        if not follow and empty >= _EMPTY_POLLS_DRAINED:
            return


def read_alerts(
    bootstrap: str,
    topic: str = "alerts",
    *,
    alert_type: str | None = None,
    from_beginning: bool = True,
    follow: bool = False,
    max_alerts: int | None = None,
    timeout_s: float | None = 60.0,
) -> list[Alert]:
    """The alerts on `topic` (parsed JSON), in arrival order; see `iter_alert_batches`."""
    with AlertReader(
        bootstrap, topic, alert_type=alert_type, from_beginning=from_beginning
    ) as reader:
        return [
            alert
            for batch in iter_alert_batches(
                reader, follow=follow, max_alerts=max_alerts, timeout_s=timeout_s
            )
            for alert in batch
        ]


def detected_ms(alert: Alert) -> int:
    """`detected_at` in epoch ms (0 when missing or malformed), for sorting."""
    try:
        return parse_ts_ms(alert.get("detected_at"))
    except ValueError:
        return 0


def shorten(text: str, width: int = _REASON_WIDTH) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis.

    >>> shorten("a  b\\nc", 10)
    'a b c'
    >>> shorten("x" * 20, 8)
    'xxxxxxx…'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "?"


def _reasons(alert: Alert) -> str:
    parts = []
    for reason in (alert.get("reasons") or [])[:2]:
        if isinstance(reason, dict):
            parts.append(shorten(str(reason.get("detail") or reason.get("code") or "")))
    return "\n".join(parts)


def alerts_table(
    alerts: Sequence[Alert], *, title: str | None = None, header: bool = True
) -> Table:
    """detected_at, user, type, severity, score/threshold and the top two reasons."""
    table = Table(title=title, show_header=header, show_lines=False)
    # Columns fold (wrap mid-word where they must) rather than cut a value at the edge.
    table.add_column("detected_at", overflow="fold")
    table.add_column("user", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("severity", overflow="fold", min_width=8)
    table.add_column("score/thr", overflow="fold", justify="right")
    table.add_column("reasons (top 2)", overflow="fold", min_width=20)
    for alert in alerts:
        severity = str(alert.get("severity", "?"))
        style = _SEVERITY_STYLE.get(severity, "")
        # Text, not markup: ids and details are data and may hold brackets.
        table.add_row(
            Text(str(alert.get("detected_at", "?"))),
            Text(str(alert.get("user_id", "?"))),
            Text(str(alert.get("type", "?"))),
            Text(severity, style=style),
            Text(f"{_num(alert.get('score'))}/{_num(alert.get('threshold'))}"),
            Text(_reasons(alert)),
        )
    return table


def alert_json_line(alert: Alert) -> str:
    """One compact JSON line."""
    return orjson.dumps(alert).decode()
