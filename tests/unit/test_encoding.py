"""The 27-byte record: encode → decode round trip, spec serialisation and compatibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    EVENT_TYPES,
    RECORD_DTYPE,
    RECORD_SIZE,
    EncodingSpec,
    Event,
    IncompatibleSpec,
    decode_record,
    encode_event,
)
from events.encoding import ENCODING_VERSION, FLAGS, event_id_hash, records_eid, records_flags

TS = 1_793_577_600_123

_money = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)
_events = st.builds(
    Event,
    event_id=st.text(min_size=1, max_size=64),
    user_id=st.just("u1"),
    ts_ms=st.integers(min_value=946_684_800_000, max_value=4_000_000_000_000),
    type=st.sampled_from((*EVENT_TYPES, "other")),
    category=st.none() | st.sampled_from(["books", "toys", "garden", "unseen-category"]),
    price=_money,
    amount=_money,
    quantity=st.none() | st.integers(min_value=0, max_value=500),
    device_id=st.none() | st.text(min_size=1, max_size=20),
    ip=st.none() | st.ip_addresses().map(str),
    country=st.none() | st.sampled_from(["AA", "DE", "ZZ", "JP"]),
    item_id=st.none() | st.text(min_size=1, max_size=10),
    payment_method=st.none() | st.text(min_size=1, max_size=10),
    coupon_code=st.none() | st.just("SAVE10"),
    order_id=st.none() | st.just("o1"),
)
SPEC = EncodingSpec(categories=("books", "garden", "toys"))


@settings(max_examples=400, deadline=None)
@given(_events)
def test_encode_decode_round_trip(event: Event) -> None:
    record = encode_event(event, SPEC)
    assert len(record) == RECORD_SIZE
    fields = decode_record(record, SPEC)
    assert fields["ts_ms"] == event.ts_ms
    assert fields["type"] == event.type
    assert fields["eid"] == event_id_hash(event.event_id)
    assert fields["country"] == event.country
    assert ("coupon_code" in fields["flags"]) == (event.coupon_code is not None)
    assert ("order_id" in fields["flags"]) == (event.order_id is not None)
    for name in ("price", "amount", "quantity"):
        value = getattr(event, name)
        if value is None:
            assert fields[name] == 0
        else:
            low, high = SPEC.bucket_range(name, fields[name])
            assert low <= value < high, (name, value, low, high)
    for name, attr in [("device", "device_id"), ("item", "item_id"), ("payment", "payment_method")]:
        assert (fields[name] == 0) == (getattr(event, attr) is None)
    # The numpy view of a record reads the same fields as the struct decoder.
    view = np.frombuffer(record, RECORD_DTYPE)[0]
    assert int(records_eid(view[None])[0]) == fields["eid"]
    assert int(records_flags(view[None])[0]) == sum(
        1 << bit for bit, name in enumerate(FLAGS) if name in fields["flags"]
    )
    assert int(view["payment"]) == fields["payment"]


def test_categories_vocabulary_then_hashed_buckets() -> None:
    assert [SPEC.category_code(c) for c in (None, "books", "garden", "toys")] == [0, 1, 2, 3]
    unseen = SPEC.category_code("unseen-category")
    assert 4 <= unseen < 4 + SPEC.category_buckets
    assert unseen == SPEC.category_code("unseen-category")


def test_fit_takes_the_most_frequent_categories_deterministically() -> None:
    cats = ["toys"] * 5 + ["books"] * 3 + ["garden"] * 3 + ["cars"] + [None]
    assert EncodingSpec.fit(cats, max_categories=3).categories == ("books", "garden", "toys")
    assert EncodingSpec.fit(reversed(cats), max_categories=3) == EncodingSpec.fit(cats, 3)


def test_ip_prefix_groups_a_subnet() -> None:
    def ip_code(ip: str) -> int:
        return int(
            decode_record(encode_event(Event("e", "u", TS, "click", ip=ip), SPEC), SPEC)["ip"]
        )

    assert ip_code("81.12.33.4") == ip_code("81.12.33.200") != ip_code("81.12.34.4")
    assert ip_code("2001:db8:1::1") == ip_code("2001:db8:1:ff::2")


def test_spec_serialises_and_hash_is_stable() -> None:
    text = SPEC.to_json()
    again = EncodingSpec.from_json(text)
    assert again == SPEC
    assert again.spec_hash == SPEC.spec_hash
    assert EncodingSpec().spec_hash != SPEC.spec_hash
    assert json.loads(text)["version"] == ENCODING_VERSION


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": ENCODING_VERSION + 1}, "version"),
        ({"event_types": ["click"]}, "event_types"),
        ({"colour": "blue"}, "colour"),
        ({"price_edges": [5, 1]}, "price_edges"),
    ],
)
def test_incompatible_spec_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    data = {**SPEC.to_dict(), **change}
    with pytest.raises(IncompatibleSpec, match=f"^{field}: "):
        EncodingSpec.from_dict(data)


def test_corrupt_spec_json_is_refused() -> None:
    with pytest.raises(IncompatibleSpec, match=r"^spec: "):
        EncodingSpec.from_json("{not json")
