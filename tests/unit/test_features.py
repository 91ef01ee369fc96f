"""windows_to_inputs: shapes, padding, derived channels, and agreement across batch layouts."""

from __future__ import annotations

import numpy as np
import pytest

from events import (
    CHANNELS,
    RECORD_DTYPE,
    EncodingSpec,
    Event,
    channel_vocab_sizes,
    encode_event,
    windows_to_inputs,
)
from events.features import MASK_ID, PAD_ID

SPEC = EncodingSpec(categories=("books", "toys"))
T0 = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC


def _window(events: list[Event]) -> np.ndarray:
    return np.frombuffer(b"".join(encode_event(e, SPEC) for e in events), RECORD_DTYPE)


def _col(x: np.ndarray, name: str) -> list[int]:
    return [int(v) for v in x[..., CHANNELS.index(name)]]


def test_derived_channels() -> None:
    w = _window(
        [
            Event("e1", "u", T0, "login", device_id="d1", country="DE", ip="1.2.3.4"),
            Event("e2", "u", T0 + 300, "click", device_id="d1", country="DE", item_id="i1"),
            Event("e3", "u", T0 + 3_600_000, "click", device_id="d2", country="FR", item_id="i1"),
            Event("e4", "u", T0 + 3_600_000 + 300, "purchase", amount=20.0, payment_method="p"),
        ]
    )
    f = windows_to_inputs([w], SPEC).features[0]
    shift = 2
    assert _col(f, "device_novelty") == [1 + shift, 2 + shift, 3 + shift, 0 + shift]
    assert _col(f, "country_novelty") == [1 + shift, 2 + shift, 3 + shift, 0 + shift]
    # Not first in the window, never seen before in it: new (3).
    assert _col(f, "item_novelty") == [0 + shift, 3 + shift, 2 + shift, 0 + shift]
    assert _col(f, "payment_novelty") == [shift, shift, shift, 3 + shift]
    gaps = _col(f, "gap")
    assert gaps[0] == shift  # first in window: no previous event
    assert gaps[1] == gaps[3] < gaps[2]  # 300 ms twice, one hour once
    ages = _col(f, "age")
    assert ages[0] > ages[2] > ages[3] == shift  # the scored event has age 0
    assert _col(f, "hour") == [shift, shift, 1 + shift, 1 + shift]


def test_category_context_compares_with_the_last_categorised_event() -> None:
    books = [Event(f"b{i}", "u", T0 + 1000 * i, "page_view", category="books") for i in range(2)]
    login = Event("l", "u", T0 + 5000, "login")
    ad = Event("ad", "u", T0 + 6000, "click", category="toys")
    w = _window([*books, login, ad, books[1]])
    shift = 2
    f = windows_to_inputs([w, _window([ad]), _window([login])], SPEC).features
    # first categorised: 1; same as the last: 2; none: 0; another: 3 (the ad), and again 3
    assert _col(f[0], "category_context") == [1 + shift, 2 + shift, shift, 3 + shift, 3 + shift]
    assert _col(f[1], "category_context")[0] == 1 + shift  # nothing earlier in its own window
    assert _col(f[2], "category_context")[0] == shift
    assert (
        int(f[..., CHANNELS.index("category_context")].max())
        < channel_vocab_sizes(SPEC)["category_context"]
    )


def test_padding_mask_and_vocab_bounds() -> None:
    rng = np.random.default_rng(0)
    windows = []
    for n in (1, 5, 64, 17):
        evs = [
            Event(
                f"e{i}",
                "u",
                T0 + int(rng.integers(0, 10**9)),
                "click",
                price=float(rng.uniform(0, 5000)),
                device_id=f"d{rng.integers(3)}",
                category=str(rng.choice(["books", "toys", "x", "y"])),
            )
            for i in range(n)
        ]
        windows.append(_window(sorted(evs, key=lambda e: e.ts_ms)))
    x = windows_to_inputs(windows, SPEC)
    assert x.features.shape == (4, 64, len(CHANNELS))
    assert x.features.dtype == np.int64
    assert x.lengths.tolist() == [1, 5, 64, 17]
    assert (x.features[x.attention_mask == 0] == PAD_ID).all()
    real = x.features[x.attention_mask == 1]
    assert (real > MASK_ID).all(), "real positions never use the pad or mask ids"
    sizes = channel_vocab_sizes(SPEC)
    for c, name in enumerate(CHANNELS):
        assert real[:, c].max() < sizes[name], name


def test_a_window_gets_the_same_inputs_alone_or_in_any_batch() -> None:
    rng = np.random.default_rng(1)
    windows = []
    for k in range(6):
        n = int(rng.integers(1, 30))
        ts = np.sort(T0 + rng.integers(0, 10**8, size=n))
        windows.append(
            _window(
                [
                    Event(
                        f"w{k}e{i}",
                        "u",
                        int(t),
                        "click",
                        device_id=f"d{rng.integers(4)}",
                        item_id=f"i{rng.integers(5)}",
                    )
                    for i, t in enumerate(ts)
                ]
            )
        )
    batch = windows_to_inputs(windows, SPEC)
    for k, w in enumerate(windows):
        alone = windows_to_inputs([w], SPEC, pad_to=64)
        n = len(w)
        assert np.array_equal(alone.features[0, :n], batch.features[k, :n])
    reordered = windows_to_inputs(windows[::-1], SPEC)
    assert np.array_equal(reordered.features[::-1][:, :, :], batch.features)


def test_pad_to_shorter_than_the_longest_window_is_refused() -> None:
    w = _window([Event(f"e{i}", "u", T0 + i, "click") for i in range(3)])
    with pytest.raises(ValueError, match="pad_to"):
        windows_to_inputs([w], SPEC, pad_to=2)


def test_empty_batch() -> None:
    x = windows_to_inputs([], SPEC)
    assert x.features.shape == (0, 0, len(CHANNELS))
