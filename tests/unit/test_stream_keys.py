"""Redis key builders of the stream: layout, hash tags, and what they refuse (no Redis)."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from events import LABELS
from stream.keys import (
    COOLDOWN_KIND,
    DEFAULT_PREFIX,
    WINDOW_KIND,
    check_prefix,
    cooldown_key,
    user_tag,
    window_key,
)

USERS = ["alice", "bob", "", "x:{tag}", "}{", "a b*?[\n", "ünïcødé", "rs:w:{0}", "u" * 500]
TAG = r"\{[0-9a-f]{16}\}"


def test_default_layout() -> None:
    assert DEFAULT_PREFIX == "rs:"
    assert re.fullmatch(rf"rs:{WINDOW_KIND}{TAG}", window_key(DEFAULT_PREFIX, "alice"))
    assert re.fullmatch(
        rf"rs:{COOLDOWN_KIND}{TAG}:fraud", cooldown_key(DEFAULT_PREFIX, "alice", "fraud")
    )


@pytest.mark.parametrize("user", USERS)
def test_user_keys_share_the_tag_and_the_cluster_slot(user: str) -> None:
    tag = user_tag(user)
    assert re.fullmatch(TAG, tag)
    window = window_key("app:", user)
    assert window == f"app:w:{tag}"
    slot = key_slot(window.encode())
    assert slot == key_slot(tag[1:-1].encode())  # the tag alone decides the slot
    for alert_type in LABELS:
        cooldown = cooldown_key("app:", user, alert_type)
        assert cooldown == f"app:cd:{tag}:{alert_type}"
        assert key_slot(cooldown.encode()) == slot


@pytest.mark.parametrize("user", [u for u in USERS if len(u) > 1])
def test_keys_never_hold_the_raw_user_id(user: str) -> None:
    for key in (window_key("p:", user), cooldown_key("p:", user, "fraud")):
        assert user not in key.removeprefix("p:")


def test_tags_are_stable_and_distinct() -> None:
    assert user_tag("alice") == user_tag("alice") == "{4deaec0cce54da89}"
    tags = {user_tag(f"user-{i}") for i in range(20_000)}
    assert len(tags) == 20_000
    assert len({key_slot(t.encode()) for t in tags}) > 10_000  # users spread over the cluster


@pytest.mark.parametrize("prefix", ["rs:{x}:", "a{", "}"])
def test_prefix_with_braces_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"^prefix: "):
        window_key(prefix, "alice")
    with pytest.raises(ValueError, match=r"^prefix: "):
        check_prefix(prefix)


@pytest.mark.parametrize("alert_type", ["", "Fraud", "fraud:x", "a b", "{x}", "x" * 65])
def test_odd_alert_type_is_refused(alert_type: str) -> None:
    with pytest.raises(ValueError, match=r"^alert_type: "):
        cooldown_key("rs:", "alice", alert_type)
