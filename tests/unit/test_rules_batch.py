"""Rules evaluated over a whole batch give, window by window, what `firing` gives: generated
windows (types, times, devices) and generated rules (every kind of condition)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from events import RECORD_DTYPE, EncodingSpec
from stream import parse_rules

SPEC = EncodingSpec()
TYPES = ("click", "page_view", "purchase", "payment_failed", "login")

conditions = st.fixed_dictionaries(
    {"at_least": st.integers(0, 6)},
    optional={
        "types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True),
        "within_s": st.sampled_from([1, 30, 600]),
        "at_most": st.integers(0, 8),
        "distinct": st.sampled_from(["device", "ip", "country"]),
    },
)
windows = st.lists(
    st.lists(
        st.tuples(st.sampled_from(TYPES), st.integers(0, 120_000), st.integers(0, 3)),
        max_size=12,
    ),
    min_size=1,
    max_size=8,
)


def _window(events: list[tuple[str, int, int]]) -> np.ndarray:
    rec = np.zeros(len(events), dtype=RECORD_DTYPE)
    ts = 1_790_000_000_000 + np.cumsum([gap for _, gap, _ in events], dtype=np.int64)
    rec["ts_s"] = ts // 1000
    rec["ms_flags"] = ts % 1000
    rec["type"] = [SPEC.event_types.index(t) for t, _, _ in events]
    for field in ("device", "ip", "country"):
        rec[field] = [v for _, _, v in events]
    return rec


def _yaml(rules: list[list[dict[str, object]]]) -> str:
    lines = ["rules:"]
    for i, conds in enumerate(rules):
        lines += [f"  - id: r{i}", "    alert: fraud", "    all:"]
        lines += [f"      - {dict(c)!r}".replace("'", "") for c in conds]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(conditions, min_size=1, max_size=3), min_size=1, max_size=3),
    windows,
)
def test_batch_evaluation_equals_window_by_window(
    rules: list[list[dict[str, object]]], batch: list[list[tuple[str, int, int]]]
) -> None:
    ruleset = parse_rules(_yaml(rules), SPEC)
    built = [_window(events) for events in batch]
    expected = [[r.rule_id for r in ruleset.firing(w)] for w in built]
    got = [[r.rule_id for r in fired] for fired in ruleset.firing_batch(built)]
    assert got == expected


def test_no_rules_and_no_windows() -> None:
    empty = parse_rules("rules: []\n", SPEC)
    assert empty.firing_batch([_window([("click", 0, 1)])]) == [[]]
    some = parse_rules(_yaml([[{"at_most": 0}]]), SPEC)
    assert some.firing_batch([]) == []
    assert [len(f) for f in some.firing_batch([_window([]), _window([("click", 0, 0)])])] == [1, 0]
