"""Personas of normal users: how often they come, how long they stay, how often they buy.

The mix is tuned so that about 2.5 % of normal sessions end in a purchase.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

__all__ = ["PERSONAS", "PERSONA_CUM", "Persona"]


class Persona(NamedTuple):
    """A kind of normal shopper. Probabilities are per session; dwell is log-normal seconds."""

    name: str
    weight: float  # share of normal users
    sessions_per_day: float
    steps: float  # mean browsing steps per session
    p_buy: float  # session ends in a purchase
    p_cart: float  # a non-buying session still fills a cart
    dwell_mu: float  # log of the median seconds between events
    dwell_sigma: float
    p_search: float  # browsing step is a search ...
    p_click: float  # ... or a click on a listed item (then its page view)
    p_coupon: float  # a purchase uses a coupon
    p_login: float  # a session starts with a login (the cookie expired)


PERSONAS: Final[tuple[Persona, ...]] = (
    Persona("browser", 0.34, 0.9, 6.0, 0.01, 0.05, math.log(16.0), 0.9, 0.15, 0.35, 0.03, 0.15),
    Persona(
        "regular_buyer", 0.22, 1.0, 8.0, 0.06, 0.10, math.log(14.0), 0.8, 0.25, 0.35, 0.10, 0.25
    ),
    Persona(
        "bargain_hunter", 0.16, 1.3, 11.0, 0.03, 0.12, math.log(12.0), 0.9, 0.20, 0.40, 0.75, 0.2
    ),
    Persona(
        "power_shopper", 0.08, 2.6, 13.0, 0.04, 0.15, math.log(10.0), 0.8, 0.25, 0.40, 0.15, 0.2
    ),
    # Fast, click-heavy and never buying: the legitimate look-alike of a click bot.
    Persona(
        "comparison_shopper", 0.20, 1.4, 18.0, 0.0, 0.06, math.log(4.5), 0.6, 0.15, 0.6, 0.02, 0.1
    ),
    # Opens product after product in quick bursts, then reads: sub-second to minutes between
    # events. The legitimate look-alike of injected clicks and of scrapers.
    Persona("tab_opener", 0.05, 1.6, 16.0, 0.02, 0.1, math.log(2.5), 1.2, 0.1, 0.55, 0.05, 0.1),
)

PERSONA_CUM: Final[tuple[float, ...]] = tuple(
    sum(p.weight for p in PERSONAS[: i + 1]) for i in range(len(PERSONAS))
)
