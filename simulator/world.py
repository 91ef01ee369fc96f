"""The world before any event: catalogue, accounts (country, devices, IPs, persona), households,
travel, the plan of attack groups, and the clock and network of a session.

Normal accounts get indices 0..n_normal-1 and attacker accounts the rest; the index is never
visible (user ids are a shuffled numbering, event ids are scrambled), so it leaks no label.
"""

from __future__ import annotations

import random
from bisect import bisect
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Final

from simulator.config import ATTACK_KINDS, WorldConfig
from simulator.core import DAY_MS, Actor, derive_seed, rng_for
from simulator.personas import PERSONA_CUM
from simulator.tables import (
    CATEGORIES,
    COUNTRIES,
    HOSTING_OCTETS,
    HOURLY_WEIGHTS,
    USER_AGENTS,
    Country,
)

__all__ = [
    "VICTIM_KINDS",
    "Catalog",
    "Plan",
    "Profile",
    "World",
    "build_world",
    "hosting_ip",
    "new_card",
    "open_session",
    "random_ip",
    "session_starts",
]

ITEMS_PER_CATEGORY: Final = 1500
_COUNTRY_CUM: Final = tuple(accumulate(c.weight for c in COUNTRIES))
_CARD_BRANDS: Final = ("visa", "visa", "mastercard", "mastercard", "amex", "discover")
_WALLETS: Final = ("paypal", "apple_pay", "google_pay", "klarna")
_DESKTOP_UAS: Final = USER_AGENTS[:6]
_MOBILE_UAS: Final = USER_AGENTS[6:]
_W_MAX: Final = max(HOURLY_WEIGHTS)
_HOUR_MS: Final = 3_600_000

# Group sizes (attacker accounts per group; a takeover involves one victim) and how often each
# kind is picked after the first round, which gives every enabled kind one group.
_GROUP_SIZE: Final[dict[str, tuple[int, int]]] = {
    "card_testing": (1, 1),
    "account_takeover": (1, 1),
    "promo_abuse": (3, 8),
    "checkout_bot": (1, 1),
    "click_bot": (1, 1),
    "scraper": (1, 1),
    "click_farm": (5, 14),
    "session_takeover": (1, 1),
    "slow_card_testing": (2, 4),
    "slow_promo_abuse": (3, 6),
    "click_injection": (1, 1),
    "stealth_scraper": (1, 1),
}
_GROUP_WEIGHT: Final[dict[str, float]] = {
    "card_testing": 3.0,
    "account_takeover": 4.0,
    "promo_abuse": 1.0,
    "checkout_bot": 1.5,
    "click_bot": 2.5,
    "scraper": 1.5,
    "click_farm": 0.8,
    "session_takeover": 4.0,
    "slow_card_testing": 1.2,
    "slow_promo_abuse": 0.8,
    "click_injection": 3.0,
    "stealth_scraper": 2.0,
}
#: Kinds that happen to an existing normal account (one victim per group, no attacker account).
VICTIM_KINDS: Final = frozenset({"account_takeover", "session_takeover", "click_injection"})


@dataclass(slots=True)
class Catalog:
    """Items per category: ids are sequential within a category; prices are USD, log-normal."""

    item_ids: list[list[str]]
    prices: list[list[float]]

    @staticmethod
    def popular(rng: random.Random) -> int:
        """An item index, skewed towards the best sellers at the front."""
        return int(ITEMS_PER_CATEGORY * rng.random() ** 2)


@dataclass(slots=True)
class Profile:
    """One account: where it lives, what it uses, how it shops."""

    index: int
    user_id: str
    country: Country
    offset_min: int
    epoch_ts: bool  # this account's client sends epoch milliseconds
    devices: list[tuple[str, str]]  # (device_id, user_agent)
    ips: list[str]
    persona: int
    activity: float
    fav_cum: list[float]  # cumulative category weights
    cards: list[str]
    join_ms: int  # new accounts sign up inside the window
    trip: tuple[int, int, str, str, str, str] | None = None  # start, end, country, dev, ua, ip
    bought: list[tuple[int, int]] = field(default_factory=list)  # (category, item) to review
    # Confusers: a family member with other tastes on the shared device (share of sessions,
    # their tastes); how often a purchase is a gift in an unusual category; a phone change.
    family: float = 0.0
    alt_fav_cum: list[float] | None = None
    gift: float = 0.0
    new_phone: tuple[int, str, str] | None = None  # from when, device id, user agent
    phone_seen: bool = False  # the first session on the new phone has happened

    def category(self, rng: random.Random) -> int:
        """A category index drawn from this user's preferences."""
        return bisect(self.fav_cum, rng.random() * self.fav_cum[-1])

    def rare_categories(self) -> list[int]:
        """The categories this user has no taste for (never in their favourites)."""
        fav = self.fav_cum
        return [c for c in range(len(fav)) if fav[c] - (fav[c - 1] if c else 0.0) < 0.2]


@dataclass(slots=True)
class Plan:
    """One attack group: its kind, its own attacker accounts and, for a takeover, the victim."""

    kind: str
    group: int
    accounts: list[int]
    victim: int = -1


@dataclass(slots=True)
class World:
    """Everything the event generators share."""

    config: WorldConfig
    start_ms: int
    end_ms: int
    id_key: int
    catalog: Catalog
    profiles: list[Profile]
    n_normal: int
    plans: list[Plan]
    victims: dict[int, Plan]


def random_ip(rng: random.Random, first_octets: tuple[int, ...]) -> str:
    """A random IPv4 address whose first octet is one of `first_octets`."""
    a, b, c = rng.choice(first_octets), rng.randrange(256), rng.randrange(256)
    return f"{a}.{b}.{c}.{rng.randrange(2, 254)}"


def hosting_ip(rng: random.Random) -> str:
    """An address in a hosting / VPN range."""
    return random_ip(rng, HOSTING_OCTETS)


def new_card(rng: random.Random) -> str:
    """A payment method as brand and last four digits, e.g. 'visa-4242'."""
    return f"{rng.choice(_CARD_BRANDS)}-{rng.randrange(10000):04d}"


def _device(rng: random.Random, mobile: bool) -> tuple[str, str]:
    return f"d{rng.getrandbits(64):016x}", rng.choice(_MOBILE_UAS if mobile else _DESKTOP_UAS)


def _home_ips(rng: random.Random, country: Country) -> list[str]:
    # Mostly one home /24 (a router renewing its lease); sometimes a second one (mobile data).
    a, b, c = rng.choice(country.octets), rng.randrange(256), rng.randrange(256)
    hosts = rng.sample(range(2, 254), rng.randint(1, 3))
    ips = [f"{a}.{b}.{c}.{h}" for h in hosts]
    if rng.random() < 0.2:
        ips.append(random_ip(rng, country.octets))
    if rng.random() < 0.06:
        ips.append(f"2a02:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}")
    return ips


def _profile(cfg: WorldConfig, start: int, end: int, index: int, user_id: str) -> Profile:
    rng = rng_for(cfg.seed, 1, index)
    country = rng.choices(COUNTRIES, cum_weights=_COUNTRY_CUM)[0]
    mobile_first = rng.random() < 0.55
    devices = [_device(rng, mobile_first)]
    if rng.random() < 0.4:
        devices.append(_device(rng, not mobile_first))
    fav = [0.15] * len(CATEGORIES)
    for cat in rng.sample(range(len(CATEGORIES)), rng.randint(2, 4)):
        fav[cat] += rng.uniform(1.0, 5.0)
    cards = [new_card(rng) if rng.random() < 0.75 else rng.choice(_WALLETS)]
    if rng.random() < 0.3:
        cards.append(new_card(rng))
    join = start + int(rng.random() * (end - start)) if rng.random() < 0.05 else start
    profile = Profile(
        index=index,
        user_id=user_id,
        country=country,
        offset_min=rng.choice(country.offsets),
        epoch_ts=rng.random() < 0.03,
        devices=devices,
        ips=_home_ips(rng, country),
        persona=bisect(PERSONA_CUM, rng.random() * PERSONA_CUM[-1]),
        activity=rng.lognormvariate(-0.3, 0.8),
        fav_cum=list(accumulate(fav)),
        cards=cards,
        join_ms=join,
    )
    if rng.random() < 0.03:  # travel: another country, a new device, a hotel or roaming IP
        away = rng.choice([c for c in COUNTRIES if c.code != country.code])
        t0 = start - DAY_MS + int(rng.random() * (end - start + DAY_MS))
        dev, ua = _device(rng, True)
        ip = random_ip(rng, away.octets)
        profile.trip = (t0, t0 + rng.randint(1, 5) * DAY_MS, away.code, dev, ua, ip)
    # Confusers, drawn last so that the draws above stay as they were.
    if rng.random() < 0.08:  # a partner or teenager shops on the same account and device
        alt = [0.15] * len(CATEGORIES)
        for cat in rng.sample(range(len(CATEGORIES)), rng.randint(1, 3)):
            alt[cat] += rng.uniform(2.0, 6.0)
        profile.family, profile.alt_fav_cum = rng.uniform(0.2, 0.5), list(accumulate(alt))
    profile.gift = rng.uniform(0.2, 0.5) if rng.random() < 0.15 else 0.02
    if rng.random() < 0.04:  # a new phone: a new device from then on, same home network
        dev, ua = _device(rng, True)
        profile.new_phone = (start - DAY_MS // 2 + int(rng.random() * (end - start)), dev, ua)
    return profile


def session_starts(rng: random.Random, lo: int, hi: int, offset_min: int, n: int) -> list[int]:
    """`n` sorted start times in [lo, hi), following the daily rhythm in local time."""
    off, span, out = offset_min * 60_000, max(1, hi - lo), []
    for _ in range(n):
        while True:  # rejection sampling against the hourly profile
            t = lo + int(rng.random() * span)
            if rng.random() * _W_MAX < HOURLY_WEIGHTS[(t + off) // _HOUR_MS % 24]:
                out.append(t)
                break
    out.sort()
    return out


def open_session(p: Profile, a: Actor, rng: random.Random, t: int) -> None:
    """Set the actor's per-session fields: usual device and home IP, or a trip, or a VPN."""
    sid = a.new_session()
    trip = p.trip
    if trip is not None and trip[0] <= t < trip[1]:
        a.ctx = {
            "session_id": sid,
            "device_id": trip[3],
            "ip": trip[5],
            "country": trip[2],
            "user_agent": trip[4],
        }
        return
    devices = p.devices
    dev, ua = devices[0] if len(devices) == 1 or rng.random() < 0.65 else devices[1]
    phone = p.new_phone
    if phone is not None and t >= phone[0] and rng.random() < 0.8:
        dev, ua = phone[1], phone[2]
    if rng.random() < 0.02:  # privacy VPN: a hosting address in some other country
        ip, country = hosting_ip(rng), rng.choice(COUNTRIES).code
    else:
        ip = p.ips[0] if rng.random() < 0.75 else rng.choice(p.ips)
        country = p.country.code
    a.ctx = {"session_id": sid, "device_id": dev, "ip": ip, "country": country, "user_agent": ua}


def _plan(cfg: WorldConfig, rng: random.Random) -> list[tuple[str, int]]:
    """(kind, size) per group: one round over the enabled kinds, then weighted picks."""
    kinds = [k for k in ATTACK_KINDS if k in cfg.attack_kinds]
    # At least one normal account stays, so every world has someone to take over or fool.
    budget = min(cfg.users - 1, int(cfg.users * cfg.attack_share + 0.5))
    groups: list[tuple[str, int]] = []
    weights = list(accumulate(_GROUP_WEIGHT[k] for k in kinds))
    while budget > 0 and kinds:
        if len(groups) < len(kinds):
            kind = kinds[len(groups)]
        else:
            kind = kinds[bisect(weights, rng.random() * weights[-1])]
        size = min(budget, rng.randint(*_GROUP_SIZE[kind]))
        groups.append((kind, size))
        budget -= size
    return groups


def build_world(cfg: WorldConfig) -> World:
    """Draw the catalogue, every account, the households and the attack groups."""
    rng = rng_for(cfg.seed, 0)
    start, end = cfg.start_ms, cfg.end_ms
    catalog = Catalog([], [])
    for c, cat in enumerate(CATEGORIES):
        base = (c + 1) * 100_000
        catalog.item_ids.append([f"P{base + n}" for n in range(ITEMS_PER_CATEGORY)])
        catalog.prices.append(
            [
                round(rng.lognormvariate(0.0, cat.sigma) * cat.median, 2)
                for _ in range(ITEMS_PER_CATEGORY)
            ]
        )
    groups = _plan(cfg, rng)
    n_attackers = sum(size for kind, size in groups if kind not in VICTIM_KINDS)
    n_normal = cfg.users - n_attackers
    # Never more victims than normal accounts (tiny worlds).
    n_victims = min(n_normal, sum(1 for kind, _ in groups if kind in VICTIM_KINDS))
    numbering = list(range(1, cfg.users + 1))
    rng.shuffle(numbering)
    width = max(7, len(str(cfg.users)))
    profiles = [
        _profile(cfg, start, end, i, f"u{numbering[i]:0{width}d}") for i in range(cfg.users)
    ]
    # Households: two normal users on one shared device, home IPs and country.
    order = list(range(n_normal))
    rng.shuffle(order)
    n_pairs = int(n_normal * 0.015)
    for k in range(n_pairs):
        first, second = profiles[order[2 * k]], profiles[order[2 * k + 1]]
        second.devices[0] = first.devices[0]
        second.ips = first.ips
        second.country, second.offset_min = first.country, first.offset_min
    victims_at = rng.sample(range(n_normal), n_victims)
    plans: list[Plan] = []
    victims: dict[int, Plan] = {}
    next_account = n_normal
    for g, (kind, size) in enumerate(groups):
        if kind in VICTIM_KINDS:
            if not victims_at:
                continue
            plan = Plan(kind, g, [], victims_at.pop())
            victims[plan.victim] = plan
        else:
            plan = Plan(kind, g, list(range(next_account, next_account + size)))
            next_account += size
        plans.append(plan)
    return World(
        config=cfg,
        start_ms=start,
        end_ms=end,
        id_key=derive_seed(cfg.seed, 7),
        catalog=catalog,
        profiles=profiles,
        n_normal=n_normal,
        plans=plans,
        victims=victims,
    )
