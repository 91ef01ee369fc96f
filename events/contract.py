"""The event, label and alert contracts as typed code (version `CONTRACT_VERSION`).

The JSON Schema files in `events/schemas/` describe the same contracts on the wire; a test keeps
the two in step. Internally every timestamp is epoch milliseconds UTC (`*_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "ALERT_TYPES",
    "CONTRACT_VERSION",
    "EVENT_TYPES",
    "LABELS",
    "MAX_EVENT_BYTES",
    "MAX_ID_CHARS",
    "OPTIONAL_FIELDS",
    "OTHER_TYPE",
    "REQUIRED_FIELDS",
    "SEVERITIES",
    "VERDICTS",
    "Alert",
    "AlertType",
    "Decision",
    "Event",
    "Label",
    "LabelName",
    "Reason",
    "Severity",
    "Verdict",
    "WindowSummary",
]

CONTRACT_VERSION: Final = 1

#: The contract's event types, in a fixed order (the encoding relies on it).
EVENT_TYPES: Final[tuple[str, ...]] = (
    "page_view",
    "search",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "payment_failed",
    "login",
    "login_failed",
    "logout",
    "password_reset",
    "address_change",
    "payment_method_add",
    "coupon_apply",
    "review",
)
#: What an unknown `type` becomes (kept and counted, never rejected).
OTHER_TYPE: Final = "other"

REQUIRED_FIELDS: Final[tuple[str, ...]] = ("event_id", "user_id", "ts", "type")

#: Optional fields: name -> kind. "str" fields carry a maximum length in characters;
#: "amount" fields are finite numbers >= 0; "count" fields are integers >= 0.
OPTIONAL_FIELDS: Final[dict[str, tuple[str, int]]] = {
    "session_id": ("str", 128),
    "item_id": ("str", 128),
    "category": ("str", 128),
    "price": ("amount", 0),
    "quantity": ("count", 0),
    "amount": ("amount", 0),
    "currency": ("str", 8),
    "order_id": ("str", 128),
    "device_id": ("str", 128),
    "ip": ("str", 64),
    "country": ("country", 2),
    "user_agent": ("str", 1024),
    "page": ("str", 2048),
    "referrer": ("str", 2048),
    "query": ("str", 1024),
    "payment_method": ("str", 128),
    "coupon_code": ("str", 128),
    "text": ("str", 16384),
}

MAX_EVENT_BYTES: Final = 64 * 1024
MAX_ID_CHARS: Final = 128

LabelName = Literal["fraud", "abnormal_click"]
LABELS: Final[tuple[LabelName, ...]] = ("fraud", "abnormal_click")
AlertType = LabelName
ALERT_TYPES: Final[tuple[AlertType, ...]] = LABELS
Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("low", "medium", "high", "critical")


@dataclass(slots=True)
class Event:
    """One validated, normalised event. Treat it as immutable (not frozen only because frozen
    dataclasses cost 2 µs more per construction, a quarter of the parse budget).

    `type` is one of `EVENT_TYPES` or `OTHER_TYPE`; for "other", `raw_type` keeps what was sent.
    `ts_ms` is epoch milliseconds UTC whatever form `ts` had on the wire.
    """

    event_id: str
    user_id: str
    ts_ms: int
    type: str
    raw_type: str | None = None
    session_id: str | None = None
    item_id: str | None = None
    category: str | None = None
    price: float | None = None
    quantity: int | None = None
    amount: float | None = None
    currency: str | None = None
    order_id: str | None = None
    device_id: str | None = None
    ip: str | None = None
    country: str | None = None
    user_agent: str | None = None
    page: str | None = None
    referrer: str | None = None
    query: str | None = None
    payment_method: str | None = None
    coupon_code: str | None = None
    text: str | None = None


@dataclass(slots=True, frozen=True)
class Label:
    """A label episode: every event of `user_id` with start_ms <= ts_ms <= end_ms is positive."""

    user_id: str
    label: LabelName
    start_ms: int
    end_ms: int
    kind: str | None = None
    source: str | None = None

    def covers(self, ts_ms: int) -> bool:
        """True when an event at `ts_ms` lies inside the episode (both ends included)."""
        return self.start_ms <= ts_ms <= self.end_ms


@dataclass(slots=True, frozen=True)
class Reason:
    """Why an alert fired: a stable `code` and a sentence for the reviewer.

    Optional: the rule that fired (`rule_id`) and the window events that drove the score.
    """

    code: str
    detail: str
    rule_id: str | None = None
    event_ids: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class WindowSummary:
    """What the scored window held, in numbers a reviewer can check at a glance."""

    events: int
    span_s: float
    first_ts_ms: int
    last_ts_ms: int
    type_counts: dict[str, int] = field(default_factory=dict)
    distinct_devices: int = 0
    distinct_ips: int = 0
    distinct_countries: int = 0


@dataclass(slots=True, frozen=True)
class Alert:
    """A fraud or abnormal-click alert, published with key `user_id`."""

    alert_id: str
    type: AlertType
    user_id: str
    event_id: str
    event_ts_ms: int
    detected_at_ms: int
    score: float
    threshold: float
    severity: Severity
    model_version: str
    window: WindowSummary
    reasons: tuple[Reason, ...] = ()


Verdict = Literal["confirmed_fraud", "confirmed_abnormal_click", "false_positive", "escalated"]
#: An analyst's verdicts: the first two confirm, `false_positive` dismisses, `escalated` defers.
VERDICTS: Final[tuple[Verdict, ...]] = (
    "confirmed_fraud",
    "confirmed_abnormal_click",
    "false_positive",
    "escalated",
)


@dataclass(slots=True, frozen=True)
class Decision:
    """An analyst's verdict on a case (one or more alerts of one user), published with key
    `user_id`. `window_start_ms`..`window_end_ms` is the behaviour the alerts covered (the
    earliest window start to the latest alerted event); `decided_at_ms` is when the verdict
    became known, the instant from which training may use it."""

    decision_id: str
    case_id: str
    alert_ids: tuple[str, ...]
    alert_types: tuple[AlertType, ...]
    user_id: str
    verdict: Verdict
    window_start_ms: int
    window_end_ms: int
    analyst: str
    decided_at_ms: int
    note: str = ""
    model_versions: tuple[str, ...] = ()

    @property
    def label(self) -> LabelName | None:
        """The label a confirming verdict gives (None for false positive or escalated)."""
        if self.verdict == "confirmed_fraud":
            return "fraud"
        if self.verdict == "confirmed_abnormal_click":
            return "abnormal_click"
        return None
