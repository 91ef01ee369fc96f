"""Abnormal clicking: click bots, scrapers, click farms.

Lots of clicks and views, almost no purchases, timing that is too regular (bots) or accounts
that are too many for their devices (farms). Most use ordinary user agents.
"""

from __future__ import annotations

import math
import random

from simulator.core import Stats
from simulator.kit import (
    actor_for,
    attack_ip,
    bot_gap,
    close_episode,
    hours,
    new_device,
    not_before,
    session_ctx,
    start_time,
)
from simulator.tables import (
    BOT_USER_AGENTS,
    CATEGORIES,
    COUNTRIES,
    HOSTING_OCTETS,
    USER_AGENTS,
)
from simulator.world import ITEMS_PER_CATEGORY, Catalog, Plan, World, random_ip

__all__ = ["click_bot", "click_farm", "scraper"]

_CAT_NAMES = tuple(c.name for c in CATEGORIES)
_FARM_COUNTRIES = tuple(c for c in COUNTRIES if c.code in ("VN", "ID", "PH", "IN", "NG", "BR"))
_MIN = 60_000


def _campaign(rng: random.Random) -> str:
    name = rng.choice(("autumn_sale", "flash_deals", f"sp{rng.randrange(1000, 9999)}"))
    return f"https://ads.adnet.example/c?cmp={name}"


def click_bot(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """Runs of sessions that click at a high, steady rate (often on promoted items), rarely buy."""
    cat_items = w.catalog.item_ids
    for idx in plan.accounts:
        p = w.profiles[idx]
        a = actor_for(w, p, sink, st)
        device = p.devices[0] if rng.random() < 0.5 else new_device(rng)
        base, jit = rng.uniform(900.0, 6_000.0), rng.uniform(0.03, 0.3)
        sigma = rng.uniform(0.3, 0.5) if rng.random() < 0.25 else 0.0  # some fake human pacing
        targets = [
            (rng.randrange(len(CATEGORIES)), rng.randrange(ITEMS_PER_CATEGORY))
            for _ in range(rng.randint(3, 40))
        ]
        runs = sorted(start_time(w, rng, hours(4)) for _ in range(1 if rng.random() < 0.6 else 2))
        for t in runs:
            t = not_before(a, t, hours(2))
            a.reset_span()
            budget = rng.randint(150, 2_000)
            while budget > 0 and t < w.end_ms:  # a run cut by the world's end stays cut
                ip = attack_ip(rng, p.country, 0.4)
                session_ctx(a, device, ip, p.country.code)
                ref = _campaign(rng) if rng.random() < 0.4 else None
                a.emit(t, "page_view", {"page": "/", **({"referrer": ref} if ref else {})})
                for _ in range(min(budget, rng.randint(40, 300))):
                    t += bot_gap(rng, base, jit, sigma)
                    budget -= 1
                    cat, item = rng.choice(targets)
                    r = rng.random()
                    fields = {"item_id": cat_items[cat][item], "category": _CAT_NAMES[cat]}
                    if r < 0.7:
                        a.emit(t, "click", {**fields, "page": f"/c/{_CAT_NAMES[cat]}"})
                    elif r < 0.95:
                        a.emit(t, "page_view", {**fields, "page": f"/p/{fields['item_id']}"})
                    elif r < 0.995:
                        a.emit(
                            t,
                            "search",
                            {"query": rng.choice(CATEGORIES[cat].terms), "page": "/search"},
                        )
                    else:  # the odd cart add that never turns into a purchase
                        a.emit(
                            t,
                            "add_to_cart",
                            {
                                **fields,
                                "price": round(w.catalog.prices[cat][item] * p.country.fx, 2),
                                "quantity": 1,
                                "currency": p.country.currency,
                            },
                        )
                t += rng.randint(1 * _MIN, 8 * _MIN)
            close_episode(st, a, "click_bot")


def scraper(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """Systematic product views, category by category in item-id order, at a steady pace,
    rotating addresses; sometimes admitting to be a bot in the user agent."""
    ids, prices = w.catalog.item_ids, w.catalog.prices
    for idx in plan.accounts:
        p = w.profiles[idx]
        a = actor_for(w, p, sink, st)
        ua = rng.choice(BOT_USER_AGENTS) if rng.random() < 0.3 else rng.choice(USER_AGENTS[:6])
        device = (f"d{rng.getrandbits(64):016x}", ua)
        net = random_ip(rng, HOSTING_OCTETS).rsplit(".", 1)[0]  # one hosting /24
        base, jit = rng.uniform(400.0, 4_000.0), rng.uniform(0.05, 0.4)
        sigma = rng.uniform(0.3, 0.5) if rng.random() < 0.2 else 0.0
        runs = sorted(start_time(w, rng, hours(3)) for _ in range(1 if rng.random() < 0.6 else 2))
        for t in runs:
            t = not_before(a, t, hours(2))
            a.reset_span()
            budget = rng.randint(300, 3_000)
            rotate = rng.randint(20, 200)
            cats = rng.sample(range(len(CATEGORIES)), rng.randint(3, 12))
            done = 0
            while budget > 0 and cats and t < w.end_ms:
                cat = cats.pop()
                first = rng.randrange(0, ITEMS_PER_CATEGORY // 2)
                for n in range(first, min(ITEMS_PER_CATEGORY, first + rng.randint(50, 400))):
                    if done % rotate == 0:  # a fresh address, and no cookie: a fresh session
                        ip = (
                            f"{net}.{rng.randrange(2, 254)}"
                            if rng.random() < 0.6
                            else attack_ip(rng, p.country, 0.0)
                        )
                        session_ctx(a, device, ip, p.country.code)
                    if (n - first) % 24 == 0:
                        a.emit(
                            t,
                            "page_view",
                            {
                                "page": f"/c/{_CAT_NAMES[cat]}?page={n // 24 + 1}",
                                "category": _CAT_NAMES[cat],
                            },
                        )
                        t += bot_gap(rng, base, jit, sigma)
                    a.emit(
                        t,
                        "page_view",
                        {
                            "page": f"/p/{ids[cat][n]}",
                            "item_id": ids[cat][n],
                            "category": _CAT_NAMES[cat],
                            "price": round(prices[cat][n] * p.country.fx, 2),
                            "currency": p.country.currency,
                        },
                    )
                    t += bot_gap(rng, base, jit, sigma)
                    if rng.random() < 0.01:  # backing off after a rate limit
                        t += rng.randint(10_000, 60_000)
                    done += 1
                    budget -= 1
                    if budget <= 0:
                        break
            close_episode(st, a, "scraper")


def click_farm(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """Many accounts on a few cheap phones and one or two addresses, clicking the same few
    promoted items through an ad campaign, in short human-paced sessions."""
    home = rng.choice(_FARM_COUNTRIES)
    devices = [
        (f"d{rng.getrandbits(64):016x}", rng.choice(USER_AGENTS[6:]))
        for _ in range(rng.randint(1, 3))
    ]
    ips = [attack_ip(rng, home, 0.2) for _ in range(rng.randint(1, 2))]
    cat = rng.randrange(len(CATEGORIES))
    targets = [Catalog.popular(rng) for _ in range(rng.randint(2, 5))]
    ref = _campaign(rng)
    campaign = ref.rsplit("=", 1)[1]
    t0 = start_time(w, rng, hours(12))
    length = hours(rng.uniform(2.0, 12.0))
    median = rng.uniform(2.0, 6.0)
    for idx in plan.accounts:
        p = w.profiles[idx]
        p.country, p.offset_min = home, home.offsets[0]  # one farm, one place
        a = actor_for(w, p, sink, st)
        a.reset_span()
        starts = sorted(t0 + int(rng.random() * length) for _ in range(rng.randint(2, 6)))
        for t in starts:
            t = not_before(a, t, _MIN)
            session_ctx(a, rng.choice(devices), rng.choice(ips), home.code)
            if rng.random() < 0.3:
                a.emit(t, "login", {"page": "/login"})
                t += int(rng.lognormvariate(math.log(median), 0.5) * 1000)
            for k in range(rng.randint(1, 5)):
                item = w.catalog.item_ids[cat][rng.choice(targets)]
                fields = {"item_id": item, "category": _CAT_NAMES[cat]}
                page = f"/p/{item}?utm_source=adnet&utm_campaign={campaign}"
                a.emit(
                    t,
                    "click",
                    {**fields, "page": "/", "referrer": ref} if k == 0 else {**fields, "page": "/"},
                )
                t += rng.randint(400, 2_500)
                a.emit(t, "page_view", {**fields, "page": page})
                t += int(rng.lognormvariate(math.log(median), 0.5) * 1000)
                if rng.random() < 0.05:
                    a.emit(t, "add_to_cart", {**fields, "quantity": 1})
                    t += int(rng.lognormvariate(math.log(median), 0.5) * 1000)
        close_episode(st, a, "click_farm")
