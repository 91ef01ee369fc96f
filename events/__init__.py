"""The shared contract: events, labels and alerts; parsing; encoding; windows; model inputs.

Pure Python + numpy, imported by training, export and the stream alike (never torch).
"""

from events.contract import (
    CONTRACT_VERSION,
    EVENT_TYPES,
    LABELS,
    OTHER_TYPE,
    VERDICTS,
    Alert,
    Decision,
    Event,
    Label,
    Reason,
    WindowSummary,
)
from events.encoding import (
    EID_SLICE,
    ENCODING_VERSION,
    RECORD_DTYPE,
    RECORD_SIZE,
    EncodingSpec,
    decode_record,
    encode_event,
)
from events.exceptions import (
    IncompatibleSpec,
    InvalidAlert,
    InvalidDecision,
    InvalidEvent,
    InvalidLabel,
    RiskstreamError,
    UnwritableOutput,
)
from events.features import CHANNELS, ModelInputs, channel_vocab_sizes, windows_to_inputs
from events.outputs import check_output
from events.parse import alert_to_dict, dumps_event, event_to_dict, parse_event, parse_label
from events.review import decision_to_dict, dumps_decision, parse_alert, parse_decision
from events.schemas import load_schema
from events.stats import ParseStats
from events.timeutil import format_ts_ms, parse_ts_ms
from events.window import (
    AppendResult,
    InMemoryWindowStore,
    WindowPolicy,
    WindowStore,
    select_window,
    window_slices,
)

__all__ = [
    "CHANNELS",
    "CONTRACT_VERSION",
    "EID_SLICE",
    "ENCODING_VERSION",
    "EVENT_TYPES",
    "LABELS",
    "OTHER_TYPE",
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "VERDICTS",
    "Alert",
    "AppendResult",
    "Decision",
    "EncodingSpec",
    "Event",
    "InMemoryWindowStore",
    "IncompatibleSpec",
    "InvalidAlert",
    "InvalidDecision",
    "InvalidEvent",
    "InvalidLabel",
    "Label",
    "ModelInputs",
    "ParseStats",
    "Reason",
    "RiskstreamError",
    "UnwritableOutput",
    "WindowPolicy",
    "WindowStore",
    "WindowSummary",
    "alert_to_dict",
    "channel_vocab_sizes",
    "check_output",
    "decision_to_dict",
    "decode_record",
    "dumps_decision",
    "dumps_event",
    "encode_event",
    "event_to_dict",
    "format_ts_ms",
    "load_schema",
    "parse_alert",
    "parse_decision",
    "parse_event",
    "parse_label",
    "parse_ts_ms",
    "select_window",
    "window_slices",
    "windows_to_inputs",
]
