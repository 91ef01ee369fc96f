"""Fraud attacks: card testing, account takeover, promotion abuse, checkout bots.

Each writes label episodes that cover exactly the attacker's events and records its purchases
for delayed chargebacks. Rates, gaps and devices vary from group to group, and most attackers
use ordinary user agents, so no single field gives them away.
"""

from __future__ import annotations

import math
import random

from simulator.core import Actor, Stats
from simulator.kit import (
    actor_for,
    attack_ip,
    close_episode,
    fraud_purchase,
    hours,
    jittered,
    new_device,
    not_before,
    other_country,
    pricey_item,
    session_ctx,
    start_time,
)
from simulator.normal import run_normal_user
from simulator.tables import CATEGORIES, PUBLIC_COUPONS, REFERRERS
from simulator.world import Catalog, Plan, Profile, World, new_card

__all__ = ["account_takeover", "card_testing", "checkout_bot", "promo_abuse"]

_CAT = {c.name: i for i, c in enumerate(CATEGORIES)}
_RESALE = tuple(_CAT[n] for n in ("electronics", "phones", "computers", "gift_cards", "jewelry"))
_CHEAP = tuple(_CAT[n] for n in ("gift_cards", "grocery", "books", "beauty"))
_LIMITED = tuple(_CAT[n] for n in ("shoes", "gaming", "electronics", "toys"))
_MIN = 60_000


def _human(rng: random.Random, median_s: float, sigma: float) -> int:
    return int(rng.lognormvariate(math.log(median_s), sigma) * 1000.0) + 200


def _item(w: World, cat: int, item: int) -> dict[str, object]:
    return {"item_id": w.catalog.item_ids[cat][item], "category": CATEGORIES[cat].name}


def card_testing(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """Bursts of tiny payments with freshly added cards: mostly declined, a few small wins."""
    for idx in plan.accounts:
        p = w.profiles[idx]
        a = actor_for(w, p, sink, st)
        bursts = sorted(start_time(w, rng, hours(1)) for _ in range(1 if rng.random() < 0.7 else 2))
        if rng.random() < 0.4:  # an aged-looking account: ordinary visits before the first burst
            run_normal_user(w, p, a, rng, None, hi=bursts[0] - hours(3))
        fx, cur = p.country.fx, p.country.currency
        for t in bursts:
            t = not_before(a, t, hours(2))
            base = rng.uniform(2_500, 12_000) if rng.random() < 0.8 else rng.uniform(25_000, 90_000)
            jit = rng.uniform(0.05, 0.35)
            device = p.devices[0] if rng.random() < 0.5 else new_device(rng)
            session_ctx(a, device, attack_ip(rng, p.country, 0.6), p.country.code)
            a.reset_span()
            a.emit(t, "login", {"page": "/login"})
            cat = rng.choice(_CHEAP)
            item = Catalog.popular(rng)
            amount = round(rng.uniform(0.5, 5.0) * fx, 2)
            money = {"amount": amount, "currency": cur}
            t += _human(rng, 6.0, 0.5)
            a.emit(
                t,
                "page_view",
                {"page": f"/p/{w.catalog.item_ids[cat][item]}", **_item(w, cat, item)},
            )
            t += _human(rng, 4.0, 0.5)
            a.emit(
                t,
                "add_to_cart",
                {**_item(w, cat, item), "price": amount, "quantity": 1, "currency": cur},
            )
            t += _human(rng, 3.0, 0.5)
            a.emit(t, "checkout", {**money, "quantity": 1, "page": "/checkout"})
            p_win, direct = rng.uniform(0.04, 0.2), rng.random() < 0.3
            for _ in range(rng.randint(8, 50)):
                card = new_card(rng)
                if not direct:  # some testers type the card straight into the payment form
                    t += jittered(rng, base, jit)
                    a.emit(t, "payment_method_add", {"payment_method": card, "page": "/checkout"})
                t += jittered(rng, base, jit)
                pay = {**money, "payment_method": card, "page": "/checkout"}
                if rng.random() < p_win:
                    fraud_purchase(a, st, t, {**pay, "quantity": 1})
                    t += jittered(rng, base, jit)
                    a.emit(t, "checkout", {**money, "quantity": 1, "page": "/checkout"})
                else:
                    a.emit(t, "payment_failed", pay)
            close_episode(st, a, "card_testing")


def _gap_for(spans: list[tuple[int, int]], lo: int, hi: int, need: int, rng: random.Random) -> int:
    """A start time in a gap of the victim's sessions wide enough for `need` ms, or -1."""
    edges = [lo, *[x for s in spans for x in s], hi]
    gaps = [
        (edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] - edges[i] > need
    ]
    if not gaps:
        return -1
    total = sum(b - a - need for a, b in gaps)
    pick = rng.random() * total
    for a, b in gaps:
        if pick < b - a - need:
            return a + need // 2 - need // 4 + int(pick)  # a margin before, more after
        pick -= b - a - need
    return -1


def account_takeover(
    w: World, p: Profile, a: Actor, spans: list[tuple[int, int]], rng: random.Random, st: Stats
) -> None:
    """A stolen login used from a new device abroad: reset, new address, new card, big order.

    Placed in a gap of the victim's own sessions, so the episode holds only the attacker's events.
    """
    t = _gap_for(spans, w.start_ms, w.end_ms, hours(1.5), rng)
    if t < 0:
        return
    where = other_country(rng, p.country.code)
    session_ctx(a, new_device(rng), attack_ip(rng, where, 0.5), where.code)
    a.reset_span()
    fast = rng.uniform(2.5, 7.0)
    if rng.random() < 0.2:  # the mailbox was taken first: reset, then straight in
        a.emit(t, "password_reset", {"page": "/account/reset"})
        t += _human(rng, 90.0, 0.6)
    else:
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4, 5))):
            a.emit(t, "login_failed", {"page": "/login"})
            t += _human(rng, 3.0, 0.6)
    a.emit(t, "login", {"page": "/login"})
    t += _human(rng, fast, 0.5)
    a.emit(t, "page_view", {"page": "/account"})
    if rng.random() < 0.8:
        t += _human(rng, fast, 0.5)
        a.emit(t, "password_reset", {"page": "/account/security"})
    if rng.random() < 0.9:
        t += _human(rng, fast * 3, 0.5)
        a.emit(t, "address_change", {"page": "/account/addresses"})
    method = p.cards[0]
    if rng.random() < 0.7:
        method = new_card(rng)
        t += _human(rng, fast * 3, 0.5)
        a.emit(t, "payment_method_add", {"payment_method": method, "page": "/account/payments"})
    fx, cur = p.country.fx, p.country.currency
    for _ in range(1 if rng.random() < 0.65 else 2):
        cat = rng.choice(_RESALE)
        if rng.random() < 0.5:
            t += _human(rng, fast, 0.5)
            a.emit(t, "search", {"query": rng.choice(CATEGORIES[cat].terms), "page": "/search"})
        item = pricey_item(w, rng, cat)
        price = round(w.catalog.prices[cat][item] * fx, 2)
        qty = rng.choice((1, 1, 2, 3))
        t += _human(rng, fast, 0.5)
        a.emit(
            t,
            "page_view",
            {
                "page": f"/p/{w.catalog.item_ids[cat][item]}",
                **_item(w, cat, item),
                "price": price,
                "currency": cur,
            },
        )
        t += _human(rng, fast, 0.5)
        a.emit(
            t,
            "add_to_cart",
            {**_item(w, cat, item), "price": price, "quantity": qty, "currency": cur},
        )
        money = {"amount": round(price * qty, 2), "currency": cur}
        t += _human(rng, fast, 0.5)
        a.emit(t, "checkout", {**money, "quantity": qty, "page": "/checkout"})
        if rng.random() < 0.2:  # the new card bounces; the victim's saved one does not
            t += _human(rng, fast * 2, 0.5)
            a.emit(t, "payment_failed", {**money, "payment_method": method, "page": "/checkout"})
            method = p.cards[0]
        t += _human(rng, fast * 2, 0.5)
        fraud_purchase(
            a,
            st,
            t,
            {**money, "quantity": qty, "payment_method": method, "page": "/checkout/confirm"},
        )
    if rng.random() < 0.3:
        t += _human(rng, fast, 0.5)
        a.emit(t, "logout", {"page": "/logout"})
    close_episode(st, a, "account_takeover")


def promo_abuse(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """A ring of fresh accounts on one or two devices and IPs, each redeeming the same coupon."""
    leader = w.profiles[plan.accounts[0]]
    home, offset = leader.country, leader.offset_min
    devices = [new_device(rng) for _ in range(rng.randint(1, 2))]
    ips = [attack_ip(rng, home, 0.5) for _ in range(rng.randint(1, 2))]
    code = (
        rng.choice(("NEWUSER20", "WELCOME10", *PUBLIC_COUPONS))
        if rng.random() < 0.7
        else f"VIP-{rng.getrandbits(24):06X}"
    )
    shared_card = new_card(rng) if rng.random() < 0.5 else None
    t = start_time(w, rng, hours(3))
    for idx in plan.accounts:
        p = w.profiles[idx]
        p.country, p.offset_min = home, offset  # one operator, one market
        a = actor_for(w, p, sink, st)
        session_ctx(a, rng.choice(devices), rng.choice(ips), home.code)
        a.reset_span()
        a.emit(t, "login", {"page": "/login"})
        t += _human(rng, 5.0, 0.6)
        ref = "https://deals.dealforum.example/hot" if rng.random() < 0.5 else rng.choice(REFERRERS)
        a.emit(t, "page_view", {"page": "/", **({"referrer": ref} if ref else {})})
        cat = p.category(rng)
        for _ in range(rng.randint(0, 3)):
            t += _human(rng, 6.0, 0.7)
            item = Catalog.popular(rng)
            a.emit(
                t,
                "page_view",
                {"page": f"/p/{w.catalog.item_ids[cat][item]}", **_item(w, cat, item)},
            )
        item = Catalog.popular(rng)
        price = round(w.catalog.prices[cat][item] * home.fx * rng.uniform(1.0, 2.5), 2)
        t += _human(rng, 4.0, 0.6)
        a.emit(
            t,
            "add_to_cart",
            {**_item(w, cat, item), "price": price, "quantity": 1, "currency": home.currency},
        )
        for _ in range(1 if rng.random() < 0.8 else 2):  # a second try when the code "fails"
            t += _human(rng, 4.0, 0.6)
            a.emit(
                t,
                "coupon_apply",
                {"coupon_code": code, "amount": price, "currency": home.currency, "page": "/cart"},
            )
        money = {"amount": round(price * 0.8, 2), "currency": home.currency}
        t += _human(rng, 5.0, 0.6)
        a.emit(t, "checkout", {**money, "quantity": 1, "page": "/checkout"})
        method = shared_card or new_card(rng)
        if rng.random() < 0.6:
            t += _human(rng, 8.0, 0.5)
            a.emit(t, "payment_method_add", {"payment_method": method, "page": "/checkout"})
        t += _human(rng, 10.0, 0.5)
        fraud_purchase(
            a,
            st,
            t,
            {**money, "quantity": 1, "payment_method": method, "page": "/checkout/confirm"},
        )
        close_episode(st, a, "promo_abuse")
        t += rng.randint(2 * _MIN, 40 * _MIN)  # next account after a breather


def checkout_bot(w: World, plan: Plan, rng: random.Random, sink: list[bytes], st: Stats) -> None:
    """A reseller's bot at product drops: cart, checkout, purchase of a few limited items in
    bulk, with sub-second regular gaps."""
    for idx in plan.accounts:
        p = w.profiles[idx]
        a = actor_for(w, p, sink, st)
        # Drops open on the hour.
        drops = sorted(
            max(w.start_ms, start_time(w, rng, hours(1)) // hours(1) * hours(1))
            for _ in range(rng.randint(1, 3))
        )
        if rng.random() < 0.5:  # the reseller also shops by hand before the drop
            run_normal_user(w, p, a, rng, None, hi=drops[0] - hours(3))
        limited = [(cat, rng.randrange(5)) for cat in rng.sample(_LIMITED, rng.randint(1, 3))]
        device = p.devices[0] if rng.random() < 0.6 else new_device(rng)
        base, jit = rng.uniform(150.0, 900.0), rng.uniform(0.08, 0.3)
        fx, cur = p.country.fx, p.country.currency
        for drop in drops:
            t = not_before(a, drop, hours(1)) + rng.randint(50, 3_000)
            session_ctx(a, device, attack_ip(rng, p.country, 0.5), p.country.code)
            a.reset_span()
            for _ in range(rng.randint(3, 12)):
                cat, item = rng.choice(limited)
                price = round(w.catalog.prices[cat][item] * fx, 2)
                qty = rng.randint(2, 10)
                fields = _item(w, cat, item)
                if rng.random() < 0.5:
                    a.emit(t, "page_view", {"page": f"/p/{fields['item_id']}", **fields})
                    t += jittered(rng, base, jit)
                a.emit(
                    t, "add_to_cart", {**fields, "price": price, "quantity": qty, "currency": cur}
                )
                money = {"amount": round(price * qty, 2), "currency": cur}
                t += jittered(rng, base, jit)
                a.emit(t, "checkout", {**money, "quantity": qty, "page": "/checkout"})
                t += jittered(rng, base, jit)
                if rng.random() < 0.15:  # sold out or velocity-limited
                    a.emit(
                        t,
                        "payment_failed",
                        {**money, "payment_method": p.cards[0], "page": "/checkout"},
                    )
                else:
                    fraud_purchase(
                        a,
                        st,
                        t,
                        {
                            **money,
                            "quantity": qty,
                            "payment_method": p.cards[0],
                            "page": "/checkout/confirm",
                        },
                    )
                t += jittered(rng, base, jit)
            close_episode(st, a, "checkout_bot")
