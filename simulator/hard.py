"""The hard attack kinds: window counts like a customer's, the signal in order, timing and
context relative to the user's own history.

- `session_takeover`: someone with remote access to the victim's own device (same device id,
  address, country, often the victim's still-open session) changes credentials, contact or
  payment details first, then buys in categories the victim never buys, well above their
  habits.
- `slow_card_testing`: a few customer-looking accounts test one or two fresh cards per visit,
  in human-paced shopping sessions spread over hours.
- `slow_promo_abuse`: a ring of new accounts, each on its own device and residential address,
  redeeming one code in ordinary-looking first orders spread over hours.
- `click_injection`: adware on a real customer's device fires ad clicks into their own genuine
  browsing; only the injected bursts are labelled (one episode per burst).
- `stealth_scraper`: product pages at human pace with human jitter, cycling through a fixed
  list of categories listing page by listing page, never buying.

Victim kinds (`session_takeover`, `click_injection`) run in their victim's turn and read the
victim's own events back from the sink, so that what they add fits around them.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Final

import orjson

from simulator.core import KEY_CHARS, Actor, Stats
from simulator.kit import (
    actor_for,
    attack_ip,
    close_episode,
    fraud_purchase,
    hours,
    new_device,
    not_before,
    session_ctx,
    start_time,
)
from simulator.normal import run_normal_user
from simulator.personas import PERSONAS
from simulator.tables import CATEGORIES, PUBLIC_COUPONS, REFERRERS
from simulator.world import ITEMS_PER_CATEGORY, Catalog, Plan, Profile, World, new_card

__all__ = [
    "click_injection",
    "session_takeover",
    "slow_card_testing",
    "slow_promo_abuse",
    "stealth_scraper",
]

_CAT = {c.name: i for i, c in enumerate(CATEGORIES)}
_NAMES: Final = tuple(c.name for c in CATEGORIES)
_RESALE: Final = tuple(
    _CAT[n] for n in ("electronics", "phones", "computers", "gift_cards", "jewelry")
)
_CHEAP: Final = tuple(_CAT[n] for n in ("gift_cards", "grocery", "books", "beauty"))
_MIN: Final = 60_000
_CTX: Final = ("session_id", "device_id", "ip", "country", "user_agent")
_Own = list[tuple[int, dict[str, object]]]


def _human(rng: random.Random, median_s: float, sigma: float) -> int:
    """A human dwell in ms: log-normal, now and then a long pause (as normal users have)."""
    d = rng.lognormvariate(math.log(median_s), sigma)
    if rng.random() < 0.03:
        d += rng.uniform(60.0, 600.0)
    return int(d * 1000.0) + 250


def _item(w: World, cat: int, item: int) -> dict[str, object]:
    return {"item_id": w.catalog.item_ids[cat][item], "category": _NAMES[cat]}


def _product(w: World, p: Profile, cat: int, item: int) -> dict[str, object]:
    """A product page view's fields, priced in the user's currency."""
    return {
        "page": f"/p/{w.catalog.item_ids[cat][item]}",
        **_item(w, cat, item),
        "price": round(w.catalog.prices[cat][item] * p.country.fx, 2),
        "currency": p.country.currency,
    }


def _own_events(
    w: World,
    p: Profile,
    a: Actor,
    lines: list[bytes],
    i0: int,
    spans: list[tuple[int, int]],
    rng: random.Random,
    st: Stats,
) -> tuple[_Own, list[tuple[int, int]]]:
    """The victim's own events (time, event) as written since `i0`, and their session spans.

    A victim with no visit of their own in the world gets a few more (counted as normal
    sessions): an attack inside a customer's sessions needs some sessions to hide in.
    """
    if not spans:
        spans = run_normal_user(w, p, a, rng, st, rate=4.0)
    return [(int(line[:15]), orjson.loads(line[KEY_CHARS:])) for line in lines[i0:]], spans


def session_takeover(
    w: World,
    p: Profile,
    a: Actor,
    lines: list[bytes],
    i0: int,
    spans: list[tuple[int, int]],
    rng: random.Random,
    st: Stats,
) -> None:
    """Remote access to the victim's own device: account changes first, then an unusual order.

    Mostly it rides one of the victim's sessions (same session id, device, address, country)
    31-90 min after the victim's last event; otherwise it opens a session on the victim's home
    device and address in a gap of their sessions. Either way it comes after more than the
    trainer's 30-min session gap, so a chargeback's episode (session start to purchase) holds
    only the attacker's events, and it ends well before the victim's next session.
    """
    own, spans = _own_events(w, p, a, lines, i0, spans, rng, st)
    if not own:  # joined too late to have a session at all: nothing to hide in
        return
    per = PERSONAS[p.persona]
    median_s = math.exp(per.dwell_mu)  # paced like the victim, so timing alone says nothing
    ends = {e for _, e in spans}
    last_ctx = {t: ev for t, ev in own if t in ends}
    starts = [s for s, _ in spans]
    riding = [
        e
        for k, (_, e) in enumerate(spans)
        if (starts[k + 1] if k + 1 < len(starts) else w.end_ms) - e > hours(2.6)
    ]
    if riding and rng.random() < 0.7:
        end = rng.choice(riding)
        ev = last_ctx[end]
        a.ctx = {k: ev[k] for k in _CTX if k in ev}
        t = end + rng.randint(31 * _MIN, 90 * _MIN)
        login = False
    else:
        edges = [w.start_ms, *[x for span in spans for x in span], w.end_ms]
        gaps = [
            (edges[i] + hours(0.6), edges[i + 1] - hours(1.2))
            for i in range(0, len(edges), 2)
            if edges[i + 1] - edges[i] > hours(1.9)
        ]
        if not gaps:
            return
        lo, hi = rng.choice(gaps)
        t = lo + int(rng.random() * (hi - lo))
        # The device, address and country the victim used last (or next, if none before).
        near = [ev for u, ev in own if u < t] or [own[0][1]]
        ev = near[-1]
        session_ctx(
            a,
            (str(ev["device_id"]), str(ev["user_agent"])),
            str(ev["ip"]),
            str(ev["country"]),
        )
        login = rng.random() < 0.5
    a.reset_span()
    if login:
        a.emit(t, "login", {"page": "/login"})
        t += _human(rng, median_s, 0.7)
    a.emit(t, "page_view", {"page": "/account"})
    # Credential, contact and payment changes, in the attacker's order, at least one.
    changes = [k for k, q in (("password_reset", 0.5), ("address_change", 0.8)) if rng.random() < q]
    method = p.cards[0]
    if rng.random() < 0.5 or not changes:
        method = new_card(rng)
        changes.append("payment_method_add")
    for kind in changes:
        t += _human(rng, median_s * 1.5, 0.7)
        if kind == "password_reset":
            a.emit(t, kind, {"page": "/account/security"})
        elif kind == "address_change":
            a.emit(t, kind, {"page": "/account/addresses"})
        else:
            a.emit(t, kind, {"payment_method": method, "page": "/account/payments"})
    # What the victim never buys, well above their own prices.
    rare = p.rare_categories() or list(range(len(CATEGORIES)))
    resale = [c for c in rare if c in _RESALE]
    cat = rng.choice(resale if resale and rng.random() < 0.7 else rare)
    seen = sorted(float(str(ev["price"])) for _, ev in own if "price" in ev)
    habit = seen[len(seen) // 2] if seen else 40.0 * p.country.fx
    prices = w.catalog.prices[cat]
    for _ in range(rng.randint(1, 4)):
        t += _human(rng, median_s, 0.7)
        if rng.random() < 0.3:
            a.emit(t, "search", {"query": rng.choice(CATEGORIES[cat].terms), "page": "/search"})
            continue
        a.emit(t, "page_view", _product(w, p, cat, Catalog.popular(rng)))
    item = max((rng.randrange(ITEMS_PER_CATEGORY) for _ in range(12)), key=prices.__getitem__)
    price = round(prices[item] * p.country.fx, 2)
    qty = max(1, min(5, math.ceil(rng.uniform(3.0, 8.0) * habit / max(price, 0.01))))
    t += _human(rng, median_s, 0.7)
    a.emit(t, "page_view", _product(w, p, cat, item))
    t += _human(rng, median_s, 0.7)
    cur = p.country.currency
    a.emit(
        t, "add_to_cart", {**_item(w, cat, item), "price": price, "quantity": qty, "currency": cur}
    )
    money = {"amount": round(price * qty, 2), "currency": cur}
    t += _human(rng, median_s, 0.7)
    a.emit(t, "page_view", {"page": "/cart"})
    t += _human(rng, median_s, 0.7)
    a.emit(t, "checkout", {**money, "quantity": qty, "page": "/checkout"})
    t += _human(rng, median_s, 0.7)
    fraud_purchase(
        a, st, t, {**money, "quantity": qty, "payment_method": method, "page": "/checkout/confirm"}
    )
    if rng.random() < 0.3:
        t += _human(rng, median_s, 0.7)
        a.emit(t, "logout", {"page": "/logout"})
    close_episode(st, a, "session_takeover")


def click_injection(
    w: World,
    p: Profile,
    a: Actor,
    lines: list[bytes],
    i0: int,
    spans: list[tuple[int, int]],
    rng: random.Random,
    st: Stats,
) -> None:
    """Adware on the victim's most used device: after some of their page loads it fires a click
    on an advertised item and the landing page, between two of the victim's own events.

    Each burst is its own episode: a burst lies strictly between two of the victim's events, so
    [start, end] holds only injected events (the contract: every event in it is positive).
    """
    own, spans = _own_events(w, p, a, lines, i0, spans, rng, st)
    if not own:
        return
    device = Counter(str(ev.get("device_id")) for _, ev in own).most_common(1)[0][0]
    infected = int(rng.random() * len(own) * 0.5)  # from this event of theirs on
    rate = rng.uniform(0.25, 0.6)  # share of page loads that fire
    campaign = f"https://ads.adnet.example/c?cmp=aff{rng.randrange(1000, 9999)}"
    targets = [(rng.randrange(len(CATEGORIES)), Catalog.popular(rng)) for _ in range(3)]
    for k in range(infected, len(own)):
        t, ev = own[k]
        if ev.get("device_id") != device or ev["type"] != "page_view" or rng.random() >= rate:
            continue
        nxt = own[k + 1][0] if k + 1 < len(own) else t + hours(1)
        t1 = t + rng.randint(600, 3_000)  # the ad script's timer, not a reader's dwell
        t2 = t1 + rng.randint(300, 2_500)  # the landing page loads like any click's
        if t2 + 1_000 >= nxt:
            continue
        a.ctx = {key: ev[key] for key in _CTX if key in ev}
        cat, item = (
            rng.choice(targets)
            if rng.random() < 0.7
            else (
                rng.randrange(len(CATEGORIES)),
                Catalog.popular(rng),
            )
        )
        fields = _item(w, cat, item)
        click: dict[str, object] = {**fields, "page": str(ev.get("page", "/"))}
        if rng.random() < 0.25:  # most adware hides the ad network's referrer
            click["referrer"] = campaign
        a.reset_span()
        a.emit(t1, "click", click)
        a.emit(t2, "page_view", _product(w, p, cat, item))
        close_episode(st, a, "click_injection")


def slow_card_testing(
    w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats
) -> None:
    """Card testing paced like shopping: each of a few accounts comes back every hour or two,
    browses cheap things, and tries one or two fresh cards on a small basket."""
    t0 = start_time(w, rng, hours(8))
    span = hours(rng.uniform(3.0, 10.0))
    cat = rng.choice(_CHEAP)
    for idx in plan.accounts:
        p = w.profiles[idx]
        a = actor_for(w, p, sink, st)
        if rng.random() < 0.5:  # an aged-looking account: ordinary visits well before
            run_normal_user(w, p, a, rng, None, hi=t0 - hours(3))
        median_s = rng.uniform(6.0, 16.0)
        device = p.devices[0]
        fx, cur = p.country.fx, p.country.currency
        visits = sorted(t0 + int(rng.random() * span) for _ in range(rng.randint(3, 6)))
        a.reset_span()
        for t in visits:
            t = not_before(a, t, rng.randint(35 * _MIN, 80 * _MIN))
            ip = p.ips[0] if rng.random() < 0.5 else attack_ip(rng, p.country, 0.0)
            session_ctx(a, device, ip, p.country.code)
            if rng.random() < 0.4:
                a.emit(t, "login", {"page": "/login"})
                t += _human(rng, median_s, 0.8)
            a.emit(t, "page_view", {"page": "/", "referrer": rng.choice(REFERRERS) or "direct"})
            for _ in range(rng.randint(1, 4)):
                t += _human(rng, median_s, 0.8)
                a.emit(t, "page_view", _product(w, p, cat, Catalog.popular(rng)))
            item = Catalog.popular(rng)
            price = round(rng.uniform(1.0, 15.0) * fx, 2)
            t += _human(rng, median_s, 0.8)
            a.emit(
                t,
                "add_to_cart",
                {**_item(w, cat, item), "price": price, "quantity": 1, "currency": cur},
            )
            money = {"amount": price, "currency": cur}
            t += _human(rng, median_s, 0.8)
            a.emit(t, "page_view", {"page": "/cart"})
            t += _human(rng, median_s, 0.8)
            a.emit(t, "checkout", {**money, "quantity": 1, "page": "/checkout"})
            for _ in range(1 if rng.random() < 0.7 else 2):
                card = new_card(rng)
                if rng.random() < 0.7:  # the card goes in first, then the payment
                    t += _human(rng, median_s * 1.5, 0.6)
                    a.emit(t, "payment_method_add", {"payment_method": card, "page": "/checkout"})
                t += _human(rng, median_s, 0.6)
                pay = {**money, "payment_method": card, "page": "/checkout"}
                if rng.random() < 0.25:
                    fraud_purchase(a, st, t, {**pay, "quantity": 1, "page": "/checkout/confirm"})
                    break
                a.emit(t, "payment_failed", pay)
        close_episode(st, a, "slow_card_testing")


def slow_promo_abuse(
    w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats
) -> None:
    """A ring of new accounts, each with its own device and residential address, placing one
    or two ordinary-looking coupon orders hours apart."""
    leader = w.profiles[plan.accounts[0]]
    home, offset = leader.country, leader.offset_min
    code = (
        rng.choice(("NEWUSER20", "WELCOME10", *PUBLIC_COUPONS))
        if rng.random() < 0.6
        else (f"REF-{rng.getrandbits(24):06X}")
    )
    cat = rng.choice(_RESALE)
    t0 = start_time(w, rng, hours(10))
    span = hours(rng.uniform(4.0, 12.0))
    for idx in plan.accounts:
        p = w.profiles[idx]
        p.country, p.offset_min = home, offset  # one operator, one market
        a = actor_for(w, p, sink, st)
        device = new_device(rng)
        median_s = rng.uniform(6.0, 14.0)
        visits = sorted(
            t0 + int(rng.random() * span) for _ in range(1 if rng.random() < 0.6 else 2)
        )
        a.reset_span()
        for n, t in enumerate(visits):
            t = not_before(a, t, rng.randint(40 * _MIN, 120 * _MIN))
            session_ctx(a, device, attack_ip(rng, home, 0.1), home.code)
            a.emit(t, "login", {"page": "/login"})
            t += _human(rng, median_s, 0.7)
            ref = (
                "https://deals.dealforum.example/hot"
                if rng.random() < 0.4
                else rng.choice(REFERRERS)
            )
            a.emit(t, "page_view", {"page": "/", **({"referrer": ref} if ref else {})})
            for _ in range(rng.randint(1, 5)):
                t += _human(rng, median_s, 0.8)
                a.emit(t, "page_view", _product(w, p, cat, Catalog.popular(rng)))
            item = Catalog.popular(rng)
            price = round(w.catalog.prices[cat][item] * home.fx, 2)
            t += _human(rng, median_s, 0.8)
            a.emit(
                t,
                "add_to_cart",
                {**_item(w, cat, item), "price": price, "quantity": 1, "currency": home.currency},
            )
            t += _human(rng, median_s, 0.8)
            a.emit(t, "page_view", {"page": "/cart"})
            codes = [code] if rng.random() < 0.6 else [rng.choice(PUBLIC_COUPONS), code]
            for c in codes:  # sometimes a public code first, which does not stack
                t += _human(rng, median_s, 0.6)
                a.emit(
                    t,
                    "coupon_apply",
                    {"coupon_code": c, "amount": price, "currency": home.currency, "page": "/cart"},
                )
            money = {"amount": round(price * 0.8, 2), "currency": home.currency}
            t += _human(rng, median_s, 0.8)
            a.emit(t, "checkout", {**money, "quantity": 1, "page": "/checkout"})
            method = new_card(rng)
            if n == 0 or rng.random() < 0.5:
                t += _human(rng, median_s, 0.6)
                a.emit(t, "payment_method_add", {"payment_method": method, "page": "/checkout"})
            t += _human(rng, median_s, 0.6)
            fraud_purchase(
                a,
                st,
                t,
                {**money, "quantity": 1, "payment_method": method, "page": "/checkout/confirm"},
            )
        close_episode(st, a, "slow_promo_abuse")


def stealth_scraper(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """Human-paced, human-jittered product views (with the clicks and the odd search a shopper
    makes), cycling through a fixed list of categories one listing page at a time, over many
    sessions on residential proxies; never a cart."""
    for idx in plan.accounts:
        p = w.profiles[idx]
        a = actor_for(w, p, sink, st)
        device = new_device(rng)
        median_s = rng.uniform(4.0, 12.0)
        cycle = rng.sample(range(len(CATEGORIES)), rng.randint(4, 9))
        page = dict.fromkeys(cycle, 0)  # the next listing page per category
        t0 = start_time(w, rng, hours(8))
        span = hours(rng.uniform(4.0, 14.0))
        visits = sorted(t0 + int(rng.random() * span) for _ in range(rng.randint(3, 8)))
        turn = 0
        a.reset_span()
        for t in visits:
            t = not_before(a, t, rng.randint(10 * _MIN, 60 * _MIN))
            session_ctx(a, device, attack_ip(rng, p.country, 0.0), p.country.code)
            a.emit(t, "page_view", {"page": "/"})
            for _ in range(rng.randint(3, 9)):
                cat = cycle[turn % len(cycle)]
                turn += 1
                listing = page[cat]
                page[cat] = listing + 1
                t += _human(rng, median_s, 0.8)
                a.emit(
                    t,
                    "page_view",
                    {"page": f"/c/{_NAMES[cat]}?page={listing + 1}", "category": _NAMES[cat]},
                )
                picks = sorted(rng.sample(range(24), rng.randint(2, 5)))
                for j in picks:
                    item = (listing * 24 + j) % ITEMS_PER_CATEGORY
                    t += _human(rng, median_s, 0.8)
                    if rng.random() < 0.06:
                        query = rng.choice(CATEGORIES[cat].terms)
                        a.emit(t, "search", {"query": query, "page": "/search"})
                        t += _human(rng, median_s, 0.8)
                    if rng.random() < 0.55:
                        a.emit(t, "click", {**_item(w, cat, item), "page": f"/c/{_NAMES[cat]}"})
                        t += rng.randint(300, 2_500)
                    a.emit(t, "page_view", _product(w, p, cat, item))
        close_episode(st, a, "stealth_scraper")
