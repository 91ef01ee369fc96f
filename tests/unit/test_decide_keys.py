"""The decision service's API keys (hashed at rest, re-read on change) and its policy checks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from riskstream.decide import ApiKeyError, DecidePolicy, KeyStore, add_key, hash_key
from riskstream.decide.web import RateLimiter


def test_keys_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key = add_key(path, "checkout")
    assert key not in path.read_text()
    assert hash_key(key) in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = KeyStore(path)
    assert store.check(key) == "checkout"
    assert store.check(key + "x") is None
    assert store.check("") is None


def test_a_new_key_works_without_a_new_store_and_a_removed_one_stops(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    old = add_key(path, "a")
    store = KeyStore(path)
    assert store.check(old) == "a"
    new = add_key(path, "a")  # rotation: both valid until the old line goes
    assert store.check(new) == "a"
    assert store.check(old) == "a"
    path.write_text("\n".join(x for x in path.read_text().splitlines() if hash_key(old) not in x))
    assert store.check(old) is None
    assert store.check(new) == "a"


def test_a_broken_keys_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# header\nalice:plaintext-key\n")
    with pytest.raises(ApiKeyError, match=r"keys:2: expected"):
        KeyStore(path).check("anything")
    with pytest.raises(ApiKeyError, match="key name"):
        add_key(tmp_path / "other", "no spaces please")


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(10.0)
    assert all(limiter.allow("k", now=0.0) for _ in range(10))
    assert not limiter.allow("k", now=0.0)
    assert limiter.allow("other", now=0.0)  # per key
    assert limiter.allow("k", now=0.1)
    assert RateLimiter(0.0).allow("k")  # 0: no limit


def test_policy_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="block_at"):
        DecidePolicy(block_at=("fatal",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_redis_down"):
        DecidePolicy(on_redis_down="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        DecidePolicy(timeout_s=0)
