"""Small tools the attack generators share: actors, episodes, bot clocks, fraudulent orders."""

from __future__ import annotations

import random
from typing import Final

from simulator.config import KIND_LABEL
from simulator.core import Actor, Episode, Stats
from simulator.tables import COUNTRIES, USER_AGENTS, Country
from simulator.world import ITEMS_PER_CATEGORY, Profile, World, hosting_ip, random_ip

__all__ = [
    "actor_for",
    "attack_ip",
    "bot_gap",
    "close_episode",
    "fraud_purchase",
    "hours",
    "jittered",
    "new_device",
    "not_before",
    "other_country",
    "pricey_item",
    "session_ctx",
    "start_time",
]

_HOUR_MS: Final = 3_600_000


def actor_for(w: World, p: Profile, sink: list[bytes], stats: Stats) -> Actor:
    """The event writer of account `p`."""
    return Actor(p.user_id, p.index, p.offset_min, p.epoch_ts, w.id_key, sink, stats)


def close_episode(stats: Stats, a: Actor, kind: str) -> None:
    """Record the events written since `a.reset_span()` as one episode of `kind`."""
    if a.hi >= 0:  # an episode always covers at least one event
        stats.episodes.append(Episode(a.user_id, KIND_LABEL[kind], kind, a.lo, a.hi))


def start_time(w: World, rng: random.Random, duration_ms: int) -> int:
    """An attack start, spread uniformly over the world so that it (mostly) fits before the end."""
    span = max(1, w.end_ms - w.start_ms - duration_ms)
    return w.start_ms + int(rng.random() * span)


def jittered(rng: random.Random, base_ms: float, jitter: float) -> int:
    """A bot's gap: a base period with a small uniform jitter (regular, but not exactly)."""
    return max(20, int(base_ms * (1.0 + rng.uniform(-jitter, jitter))))


def bot_gap(rng: random.Random, base_ms: float, jitter: float, sigma: float) -> int:
    """A bot's gap: `jittered` when `sigma` is 0, else log-normal around `base_ms`.

    The log-normal kind imitates human pacing (narrower than a human's, with no long pauses).
    """
    if sigma <= 0.0:
        return jittered(rng, base_ms, jitter)
    return max(20, int(base_ms * rng.lognormvariate(0.0, sigma)))


def attack_ip(rng: random.Random, country: Country, hosting: float) -> str:
    """A hosting address with probability `hosting`, else a residential proxy in `country`."""
    if rng.random() < hosting:
        return hosting_ip(rng)
    return random_ip(rng, country.octets)


def other_country(rng: random.Random, code: str) -> Country:
    """A country other than `code`."""
    while True:
        country = rng.choice(COUNTRIES)
        if country.code != code:
            return country


def new_device(rng: random.Random) -> tuple[str, str]:
    """A device id never seen before and an ordinary user agent."""
    return f"d{rng.getrandbits(64):016x}", rng.choice(USER_AGENTS)


def pricey_item(w: World, rng: random.Random, cat: int, tries: int = 6) -> int:
    """The most expensive of a few random items in `cat` (what a fraudster resells)."""
    prices = w.catalog.prices[cat]
    return max((rng.randrange(ITEMS_PER_CATEGORY) for _ in range(tries)), key=prices.__getitem__)


def fraud_purchase(a: Actor, stats: Stats, t: int, extra: dict[str, object]) -> None:
    """A purchase whose order will be charged back (most of them, later, in feedback)."""
    order = a.new_order()
    a.emit(t, "purchase", {"order_id": order, **extra})
    stats.fraud_orders.append((order, t))


def session_ctx(a: Actor, device: tuple[str, str], ip: str, country: str) -> None:
    """Open a new session on the given device, address and country."""
    a.ctx = {
        "session_id": a.new_session(),
        "device_id": device[0],
        "ip": ip,
        "country": country,
        "user_agent": device[1],
    }


def not_before(a: Actor, t: int, pause_ms: int) -> int:
    """`t`, or later if the actor's last event was less than `pause_ms` before it.

    Keeps an account's sessions and episodes from overlapping one another.
    """
    return t if a.hi < 0 else max(t, a.hi + pause_ms)


def hours(n: float) -> int:
    """`n` hours in milliseconds."""
    return int(n * _HOUR_MS)
