"""Sign-in rate limit and lockout, and the client's address behind a trusted proxy.

Failed sign-ins are counted per user name and per client address within a sliding window;
at the limit, that name (or address) is locked out for a while: every sign-in for it is
refused without checking the password, the right one included. A success clears its user
name's count, never its address's (signing in to one's own account must not reset a guessing
run against others). In memory: one console process, counts start afresh at a restart.

>>> t = SignInThrottle(LoginLimits(max_failures=2, max_failures_per_address=10, window_s=60,
...                                lockout_s=300), clock=lambda: 0.0)
>>> t.locked("alice", "10.0.0.1") is None
True
>>> t.failed("alice", "10.0.0.1"), t.failed("alice", "10.0.0.1")
(None, 'user name')
>>> t.locked("alice", "10.0.0.9")
300.0
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["LoginLimits", "Network", "SignInThrottle", "client_address", "parse_networks"]

_MAX_KEYS: Final = 100_000  # a flood of distinct names cannot grow memory without bound

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class LoginLimits:
    """`max_failures` per user name and `max_failures_per_address` per client address within
    `window_s`, then `lockout_s` locked; 0 failures: no limit of that kind."""

    max_failures: int = 5
    max_failures_per_address: int = 20
    window_s: float = 300.0
    lockout_s: float = 900.0


class SignInThrottle:
    """Failure counts and lockouts, keyed by ("user", name) and ("address", ip)."""

    def __init__(self, limits: LoginLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, str], int]]:
        lim = self.limits
        keys = [
            (("user", user), lim.max_failures),
            (("address", address), lim.max_failures_per_address),
        ]
        return [(key, limit) for key, limit in keys if limit > 0]

    def locked(self, user: str, address: str) -> float | None:
        """Seconds left of the longest lockout on this name or address, or None."""
        now = self._clock()
        left = [
            until - now
            for key, _ in self._keys(user, address)
            if (until := self._locked_until.get(key)) is not None and until > now
        ]
        return max(left) if left else None

    def failed(self, user: str, address: str) -> str | None:
        """Count a failed sign-in; returns what it locked ("user name" or "address"), if any."""
        now = self._clock()
        self._prune(now)
        locked = None
        for key, limit in self._keys(user, address):
            times = self._failures.setdefault(key, deque())
            while times and times[0] <= now - self.limits.window_s:
                times.popleft()
            times.append(now)
            if len(times) >= limit:
                self._locked_until[key] = now + self.limits.lockout_s
                times.clear()
                locked = locked or ("user name" if key[0] == "user" else "address")
        return locked

    def succeeded(self, user: str) -> None:
        """A right password: the user name's failures are forgiven (not the address's)."""
        self._failures.pop(("user", user), None)

    def _prune(self, now: float) -> None:
        if len(self._failures) + len(self._locked_until) < _MAX_KEYS:
            return
        horizon = now - self.limits.window_s
        self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > horizon}
        self._locked_until = {k: t for k, t in self._locked_until.items() if t > now}
        while len(self._failures) >= _MAX_KEYS // 2:  # still full: forget the oldest
            self._failures.pop(next(iter(self._failures)))


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR blocks (`RISKSTREAM_REVIEW_TRUSTED_PROXIES`).

    >>> parse_networks("10.0.0.0/8, 127.0.0.1")
    (IPv4Network('10.0.0.0/8'), IPv4Network('127.0.0.1/32'))
    """
    out = []
    for part in text.split(","):
        if part.strip():
            try:
                out.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"not an address or CIDR block: {part.strip()!r}") from None
    return tuple(out)


def _within(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the
    right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left
    are whatever the client wrote). Without trusted proxies the header is ignored.

    >>> nets = parse_networks("10.0.0.2")
    >>> client_address("10.0.0.2", "6.6.6.6, 203.0.113.7", nets)
    '203.0.113.7'
    >>> client_address("198.51.100.1", "203.0.113.7", nets)  # not from the proxy: ignored
    '198.51.100.1'
    >>> client_address("10.0.0.2", "203.0.113.7", ())
    '10.0.0.2'
    """
    trusted = tuple(trusted)
    if not trusted or not forwarded_for or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else peer
