"""Simulated worlds against the shipped JSON Schemas, and through the shared window code."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from events import (
    RECORD_DTYPE,
    EncodingSpec,
    InMemoryWindowStore,
    WindowPolicy,
    encode_event,
    load_schema,
    parse_event,
    select_window,
    window_slices,
    windows_to_inputs,
)
from events.window import records_ts_ms
from simulator import WorldConfig, simulate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate_world(WorldConfig(users=250, days=1.0, seed=11, attack_share=0.2), out, progress=False)
    return out


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        load_schema(name), format_checker=jsonschema.FormatChecker()
    )


def test_every_simulated_event_and_label_validates_against_the_schemas(world: Path) -> None:
    events, labels = _validator("event"), _validator("label")
    lines = (world / "events.jsonl").read_bytes().splitlines()
    assert len(lines) > 1000
    for line in lines:
        events.validate(orjson.loads(line))
    label_lines = (world / "labels.jsonl").read_bytes().splitlines()
    assert label_lines
    for line in label_lines:
        labels.validate(orjson.loads(line))


def test_streaming_and_offline_windows_agree_on_a_simulated_world(world: Path) -> None:
    """Append every event to a store in file order (as the stream will) and compare each
    window, and its model input, with the offline slicer the trainer uses."""
    spec, policy = EncodingSpec(), WindowPolicy(max_events=16, max_age_s=3600)
    store = InMemoryWindowStore(policy)
    online: dict[str, list[bytes]] = defaultdict(list)
    records: dict[str, list[bytes]] = defaultdict(list)
    for line in (world / "events.jsonl").read_bytes().splitlines():
        event = parse_event(line, now_ms=4_000_000_000_000)
        record = encode_event(event, spec)
        records[event.user_id].append(record)
        window = select_window(store.append(event.user_id, record).stored, policy)
        online[event.user_id].append(window.tobytes())
    checked = 0
    for user, recs in records.items():
        arr = np.frombuffer(b"".join(recs), RECORD_DTYPE)
        offline = [arr[s] for s in window_slices(records_ts_ms(arr), policy)]
        assert [w.tobytes() for w in offline] == online[user]
        a = windows_to_inputs(offline, spec)
        b = windows_to_inputs([np.frombuffer(w, RECORD_DTYPE) for w in online[user]], spec)
        assert np.array_equal(a.features, b.features)
        checked += len(offline)
    assert checked == sum(map(len, records.values()))
