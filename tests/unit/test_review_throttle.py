"""The console's sign-in throttle: the window slides, lockouts end, a success forgives its name
only, and the client address is the peer unless a trusted proxy forwarded the request."""

from __future__ import annotations

import pytest

from riskstream.review.exceptions import ReviewError
from riskstream.review.settings import ReviewSettings
from riskstream.review.throttle import LoginLimits, SignInThrottle, client_address, parse_networks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_outside_the_window_do_not_count_and_lockouts_end() -> None:
    clock = Clock()
    t = SignInThrottle(LoginLimits(3, 0, window_s=60, lockout_s=600), clock)
    t.failed("alice", "a")
    t.failed("alice", "a")
    clock.now += 61  # both slid out of the window
    assert t.failed("alice", "a") is None
    assert t.failed("alice", "b") is None
    assert t.failed("alice", "c") == "user name"
    assert t.locked("alice", "z") == 600
    clock.now += 599
    assert t.locked("alice", "z") == pytest.approx(1)
    clock.now += 1
    assert t.locked("alice", "z") is None


def test_a_success_forgives_the_name_not_the_address() -> None:
    t = SignInThrottle(LoginLimits(2, 3, window_s=60, lockout_s=60), Clock())
    assert t.failed("bob", "10.0.0.1") is None
    t.succeeded("bob")
    assert t.failed("bob", "10.0.0.1") is None  # bob's count starts again at 1...
    assert t.failed("carol", "10.0.0.1") == "address"  # ...the address's reached 3
    assert t.locked("dave", "10.0.0.1") == 60
    assert t.locked("bob", "10.0.0.2") is None


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    proxies = parse_networks("10.0.0.0/24")
    assert client_address("10.0.0.7", "1.2.3.4, 10.0.0.9", proxies) == "1.2.3.4"
    assert client_address("10.0.0.7", "not-an-ip", proxies) == "not-an-ip"
    assert client_address("10.0.1.7", "1.2.3.4", proxies) == "10.0.1.7"
    assert client_address("10.0.0.7", None, proxies) == "10.0.0.7"


def test_bad_settings_are_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_REVIEW_LOGIN_LOCKOUT_S", "soon")
    with pytest.raises(ReviewError, match="RISKSTREAM_REVIEW_LOGIN_LOCKOUT_S: 'soon'"):
        ReviewSettings(database_url="", bootstrap="")
    monkeypatch.delenv("RISKSTREAM_REVIEW_LOGIN_LOCKOUT_S")
    monkeypatch.setenv("RISKSTREAM_REVIEW_TRUSTED_PROXIES", "10.0.0.1, proxy.local")
    with pytest.raises(ReviewError, match="TRUSTED_PROXIES: not an address or CIDR block"):
        ReviewSettings(database_url="", bootstrap="").proxies()
