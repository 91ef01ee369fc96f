"""Normal users: sessions on a daily rhythm in local time, shopping funnels, human dwell times,
and the legitimate oddities that keep detection honest (mistyped passwords, travel, VPNs,
address changes before big orders, declined cards, shared household devices, family members
with other tastes on one account, gifts in unusual categories, a new phone, a first order
that adds a card)."""

from __future__ import annotations

import random
from bisect import bisect
from typing import Final

from simulator.core import Actor, Stats, poisson
from simulator.personas import PERSONAS, Persona
from simulator.tables import CATEGORIES, PUBLIC_COUPONS, REFERRERS, REVIEW_TEXTS
from simulator.world import (
    ITEMS_PER_CATEGORY,
    Catalog,
    Profile,
    World,
    new_card,
    open_session,
    session_starts,
)

__all__ = ["Visit", "run_normal_user"]

_CAT_NAMES: Final = tuple(c.name for c in CATEGORIES)


class Visit:
    """One session in progress: the clock, the cart, the focus category."""

    __slots__ = (
        "a",
        "cart",
        "cat",
        "cur",
        "fx",
        "gift",
        "p",
        "per",
        "prices",
        "rng",
        "t",
        "taste",
        "w",
    )

    def __init__(self, w: World, p: Profile, per: Persona, a: Actor, rng: random.Random, t: int):
        self.w, self.p, self.per, self.a, self.rng, self.t = w, p, per, a, rng, t
        self.cart: list[tuple[int, int, float, int]] = []  # (category, item, price, quantity)
        # A family member on the shared account browses with their own tastes.
        alt = p.alt_fav_cum
        self.taste = alt if alt is not None and rng.random() < p.family else p.fav_cum
        self.gift = False
        self.cat = self.category()
        self.cur = p.country.currency
        self.fx = p.country.fx
        self.prices = w.catalog.prices

    def category(self) -> int:
        """A category drawn from this session's tastes."""
        taste = self.taste
        return bisect(taste, self.rng.random() * taste[-1])

    def wait(self) -> None:
        """Human dwell: log-normal seconds, now and then a long pause."""
        rng = self.rng
        d = rng.lognormvariate(self.per.dwell_mu, self.per.dwell_sigma)
        if rng.random() < 0.03:
            d += rng.uniform(60.0, 900.0)
        self.t += int(d * 1000.0) + 250

    def price(self, cat: int, item: int) -> float:
        """The item's price in the user's currency."""
        return round(self.prices[cat][item] * self.fx, 2)

    def item_fields(self, cat: int, item: int) -> dict[str, object]:
        """Item id and category of a catalogue item."""
        return {"item_id": self.w.catalog.item_ids[cat][item], "category": _CAT_NAMES[cat]}

    def login(self, signup: bool = False) -> None:
        """A login, sometimes after mistyped passwords, rarely after a password reset."""
        a, rng, r = self.a, self.rng, self.rng.random()
        page: dict[str, object] = {"page": "/login"}
        if not signup and r < 0.085:
            for _ in range(3 if r < 0.015 else rng.randint(1, 2)):
                a.emit(self.t, "login_failed", page)
                self.t += rng.randint(3_000, 15_000)
            if r < 0.015:  # gave up and reset: the mail takes a while
                a.emit(self.t, "password_reset", {"page": "/account/reset"})
                self.t += rng.randint(60_000, 400_000)
        a.emit(self.t, "login", page)
        self.wait()

    def land(self) -> None:
        """The first page view, from a search engine, social, an ad, a newsletter or direct."""
        rng = self.rng
        ref = rng.choice(REFERRERS)
        extra: dict[str, object] = {"page": "/"}
        if ref is not None:
            extra["referrer"] = ref
            if rng.random() < 0.5:  # deep link straight to a product
                item = Catalog.popular(rng)
                extra = {
                    "page": f"/p/{self.w.catalog.item_ids[self.cat][item]}",
                    "referrer": ref,
                    **self.item_fields(self.cat, item),
                    "price": self.price(self.cat, item),
                    "currency": self.cur,
                }
        self.a.emit(self.t, "page_view", extra)

    def product_page(self, cat: int, item: int) -> None:
        """A product page view."""
        fields = self.item_fields(cat, item)
        self.a.emit(
            self.t,
            "page_view",
            {
                "page": f"/p/{fields['item_id']}",
                **fields,
                "price": self.price(cat, item),
                "currency": self.cur,
            },
        )

    def add(self, cat: int, item: int) -> None:
        """Put an item in the cart."""
        rng = self.rng
        qty = 1 if rng.random() < 0.87 else rng.randint(2, 4)
        price = self.price(cat, item)
        self.cart.append((cat, item, price, qty))
        self.a.emit(
            self.t,
            "add_to_cart",
            {**self.item_fields(cat, item), "price": price, "quantity": qty, "currency": self.cur},
        )

    def browse(self, steps: int, p_add: float) -> None:
        """Searches, clicks, category and product pages; items go to the cart with `p_add`."""
        a, rng, per = self.a, self.rng, self.per
        click_to = per.p_search + per.p_click
        for _ in range(steps):
            self.wait()
            if rng.random() < (0.05 if self.gift else 0.25):
                self.cat = self.category()
            cat, r = self.cat, rng.random()
            if r < per.p_search:
                terms = CATEGORIES[cat].terms
                a.emit(self.t, "search", {"query": rng.choice(terms), "page": "/search"})
                continue
            item = Catalog.popular(rng)
            if r < click_to:
                a.emit(
                    self.t,
                    "click",
                    {**self.item_fields(cat, item), "page": f"/c/{_CAT_NAMES[cat]}"},
                )
                self.t += rng.randint(300, 2_500)
                self.product_page(cat, item)
            elif r < click_to + 0.15:
                a.emit(
                    self.t,
                    "page_view",
                    {"page": f"/c/{_CAT_NAMES[cat]}", "category": _CAT_NAMES[cat]},
                )
                continue
            else:
                self.product_page(cat, item)
            if p_add and rng.random() < p_add:
                self.wait()
                self.add(cat, item)
            elif self.cart and rng.random() < 0.03:
                self.wait()
                c, i, price, qty = self.cart.pop(rng.randrange(len(self.cart)))
                a.emit(
                    self.t,
                    "remove_from_cart",
                    {
                        **self.item_fields(c, i),
                        "price": price,
                        "quantity": qty,
                        "currency": self.cur,
                    },
                )

    def amount(self) -> float:
        """The cart total."""
        return round(sum(price * qty for _, _, price, qty in self.cart), 2)

    def buy(self, coupon: str | None, signup: bool = False) -> bool:
        """Cart page, coupon, maybe an address change, checkout, payment; True if purchased."""
        a, rng, p = self.a, self.rng, self.p
        if not self.cart:
            cat, item = self.cat, Catalog.popular(rng)
            self.product_page(cat, item)
            self.wait()
            self.add(cat, item)
        self.wait()
        a.emit(self.t, "page_view", {"page": "/cart"})
        amount = self.amount()
        if coupon is not None:
            self.wait()
            a.emit(
                self.t,
                "coupon_apply",
                {"coupon_code": coupon, "amount": amount, "currency": self.cur, "page": "/cart"},
            )
            amount = round(amount * rng.uniform(0.75, 0.95), 2)
        if (
            (amount > 250.0 * self.fx and rng.random() < 0.15)
            or (self.gift and rng.random() < 0.6)
            or rng.random() < 0.01
        ):
            self.wait()  # a gift shipped elsewhere, or a recent move: legitimate
            a.emit(self.t, "address_change", {"page": "/checkout/address"})
        qty = sum(q for _, _, _, q in self.cart)
        self.wait()
        money = {"amount": amount, "currency": self.cur}
        a.emit(self.t, "checkout", {**money, "quantity": qty, "page": "/checkout"})
        method = p.cards[0] if rng.random() < 0.8 else rng.choice(p.cards)
        if signup and rng.random() < 0.8:  # a new customer's first order: the card goes in now
            self.wait()
            a.emit(self.t, "payment_method_add", {"payment_method": method, "page": "/checkout"})
        if rng.random() < 0.05:  # declined card: retry with another, add one, or give up
            self.wait()
            a.emit(
                self.t, "payment_failed", {**money, "payment_method": method, "page": "/checkout"}
            )
            r = rng.random()
            if r < 0.2:
                return False
            self.wait()
            if r < 0.65:
                method = new_card(rng)
                p.cards.append(method)
                a.emit(
                    self.t, "payment_method_add", {"payment_method": method, "page": "/checkout"}
                )
                self.wait()
                if rng.random() < 0.15:  # card trouble: the new one is refused too
                    a.emit(
                        self.t,
                        "payment_failed",
                        {**money, "payment_method": method, "page": "/checkout"},
                    )
                    self.wait()
                    method = p.cards[0]
            else:
                method = rng.choice(p.cards)
        else:
            self.wait()
        a.emit(
            self.t,
            "purchase",
            {
                "order_id": a.new_order(),
                **money,
                "quantity": qty,
                "payment_method": method,
                "page": "/checkout/confirm",
            },
        )
        cat, item, _, _ = self.cart[0]
        p.bought.append((cat, item))
        return True


def _session(
    w: World,
    p: Profile,
    per: Persona,
    a: Actor,
    rng: random.Random,
    t: int,
    buy: bool,
    signup: bool,
) -> tuple[int, bool]:
    """One normal session; returns (time of its last event, purchased)."""
    open_session(p, a, rng, t)
    v = Visit(w, p, per, a, rng, t)
    phone = p.new_phone
    first_on_phone = (
        phone is not None and not p.phone_seen and t >= phone[0] and a.ctx["device_id"] == phone[1]
    )
    if first_on_phone:  # a new phone has no cookie: log in (maybe forgetting the password)
        p.phone_seen = True
    if signup or first_on_phone or rng.random() < per.p_login:
        v.login(signup)
    if p.bought and rng.random() < 0.3:  # reviews come sessions after the purchase
        cat, item = p.bought.pop(0)
        a.emit(
            v.t,
            "review",
            {
                **v.item_fields(cat, item),
                "text": rng.choice(REVIEW_TEXTS),
                "page": f"/p/{w.catalog.item_ids[cat][item]}#reviews",
            },
        )
        v.wait()
    elif rng.random() < 0.01:  # account housekeeping
        kind = "address_change" if rng.random() < 0.5 else "payment_method_add"
        extra: dict[str, object] = {"page": "/account"}
        if kind == "payment_method_add":
            extra["payment_method"] = new_card(rng)
        a.emit(v.t, kind, extra)
        v.wait()
    if buy and rng.random() < p.gift:  # a present: a category they never buy, pricier
        rare = p.rare_categories()
        if rare:
            v.gift, v.cat = True, rng.choice(rare)
    v.land()
    cart_mode = buy or rng.random() < per.p_cart
    steps = 1 + int(rng.expovariate(1.0 / per.steps)) + (3 if buy else 0)
    v.browse(steps, 0.0 if v.gift else 0.3 if buy else (0.15 if cart_mode else 0.0))
    bought = False
    if buy:
        if v.gift:
            prices = w.catalog.prices[v.cat]
            item = max(
                (rng.randrange(ITEMS_PER_CATEGORY) for _ in range(4)), key=prices.__getitem__
            )
            v.wait()
            v.product_page(v.cat, item)
            v.wait()
            v.add(v.cat, item)
        use = rng.random() < (0.6 if signup else per.p_coupon)
        coupon = ("NEWUSER20" if signup else rng.choice(PUBLIC_COUPONS)) if use else None
        bought = v.buy(coupon, signup)
    elif v.cart and rng.random() < 0.35:  # abandoned at checkout
        v.wait()
        a.emit(v.t, "checkout", {"amount": v.amount(), "currency": v.cur, "page": "/checkout"})
    if rng.random() < 0.08:
        v.wait()
        a.emit(v.t, "logout", {"page": "/logout"})
    return a.hi, bought


def run_normal_user(
    w: World,
    p: Profile,
    a: Actor,
    rng: random.Random,
    stats: Stats | None,
    lo: int | None = None,
    hi: int | None = None,
    rate: float = 1.0,
) -> list[tuple[int, int]]:
    """Write one user's normal sessions in [lo, hi) (default: the world); returns their spans.

    `stats` is None for the ordinary-looking sessions of attacker accounts, which must not
    count towards the normal purchase rate.
    """
    per = PERSONAS[p.persona]
    lo = max(w.start_ms if lo is None else lo, p.join_ms)
    hi = w.end_ms if hi is None else hi
    if hi <= lo:
        return []
    n = poisson(rng, rate * p.activity * per.sessions_per_day * (hi - lo) / 86_400_000)
    signup = p.join_ms > w.start_ms
    spans: list[tuple[int, int]] = []
    prev_end = -(1 << 62)
    for start in session_starts(rng, lo, hi, p.offset_min, n):
        start = max(start, prev_end + rng.randint(60_000, 900_000))  # sessions never overlap
        buy = rng.random() < per.p_buy
        a.reset_span()
        end, bought = _session(w, p, per, a, rng, start, buy, signup)
        signup = False
        spans.append((start, end))
        prev_end = end
        if stats is not None:
            stats.sessions += 1
            stats.purchase_sessions += bought
    return spans
