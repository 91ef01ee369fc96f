"""`EventIds`: the packed per-user id column reads back as the list it was built from."""

from __future__ import annotations

import pytest

from training.data import EventIds


def test_event_ids_read_back_like_a_list() -> None:
    ids = ["e1", "ü-2", "", "event-0003"]
    packed = EventIds(ids)
    assert len(packed) == 4
    assert list(packed) == ids
    assert packed[1] == "ü-2"
    assert packed[-1] == "event-0003"
    assert packed[2] == ""
    assert packed[1:3] == ["ü-2", ""]
    assert packed == ids
    assert packed == EventIds(ids)
    assert packed != EventIds(ids[:3])
    assert "event-0003" in packed
    assert "e2" not in packed
    with pytest.raises(IndexError):
        packed[4]
    assert list(EventIds([])) == []
