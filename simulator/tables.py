"""Fixed tables of the simulated world: countries, categories, user agents, coupons, texts.

Tuples, not sets, so that every draw from them is deterministic.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "BOT_USER_AGENTS",
    "CATEGORIES",
    "COUNTRIES",
    "HOSTING_OCTETS",
    "HOURLY_WEIGHTS",
    "PUBLIC_COUPONS",
    "REFERRERS",
    "REVIEW_TEXTS",
    "USER_AGENTS",
    "Category",
    "Country",
]


class Country(NamedTuple):
    """A home country: ISO code, user share, UTC offsets (minutes), currency, IP first octets."""

    code: str
    weight: float
    offsets: tuple[int, ...]
    currency: str
    fx: float  # local currency units per USD, so prices read like local prices
    octets: tuple[int, ...]


# Offsets are those in force in November 2026 (northern DST over, southern DST on).
COUNTRIES: Final[tuple[Country, ...]] = (
    Country("US", 30.0, (-300, -300, -360, -420, -480), "USD", 1.0, (24, 47, 68, 71, 73, 98)),
    Country("CA", 4.0, (-300, -480), "CAD", 1.37, (24, 70, 142)),
    Country("MX", 3.0, (-360,), "MXN", 17.5, (187, 189, 201)),
    Country("BR", 5.0, (-180,), "BRL", 5.0, (177, 179, 189, 200)),
    Country("GB", 8.0, (0,), "GBP", 0.79, (81, 86, 90, 109)),
    Country("DE", 8.0, (60,), "EUR", 0.92, (79, 84, 91, 93)),
    Country("FR", 6.0, (60,), "EUR", 0.92, (78, 82, 90, 92)),
    Country("ES", 3.0, (60,), "EUR", 0.92, (79, 83, 88)),
    Country("IT", 3.0, (60,), "EUR", 0.92, (79, 87, 93)),
    Country("NL", 2.0, (60,), "EUR", 0.92, (77, 84, 145)),
    Country("PL", 2.0, (60,), "PLN", 4.0, (83, 89, 178)),
    Country("SE", 1.5, (60,), "SEK", 10.5, (78, 83, 85)),
    Country("TR", 2.0, (180,), "TRY", 32.0, (78, 85, 88)),
    Country("IN", 6.0, (330,), "INR", 83.0, (49, 103, 117, 157)),
    Country("JP", 5.0, (540,), "JPY", 150.0, (60, 126, 133, 153)),
    Country("KR", 2.0, (540,), "KRW", 1350.0, (58, 112, 121, 175)),
    Country("AU", 3.0, (660, 660, 480), "AUD", 1.52, (1, 27, 101, 110)),
    Country("SG", 1.0, (480,), "SGD", 1.34, (116, 118, 175)),
    Country("ID", 2.0, (420,), "IDR", 15600.0, (36, 110, 114, 180)),
    Country("PH", 1.5, (480,), "PHP", 56.0, (49, 112, 120, 175)),
    Country("VN", 1.0, (420,), "VND", 24500.0, (14, 113, 171)),
    Country("NG", 1.0, (60,), "NGN", 1500.0, (41, 102, 105, 197)),
    Country("ZA", 1.0, (120,), "ZAR", 18.5, (41, 102, 105, 196)),
    Country("AE", 1.0, (240,), "AED", 3.67, (5, 86, 94, 176)),
)

#: First octets of hosting / VPN / proxy ranges (used by VPN users and most attackers).
HOSTING_OCTETS: Final[tuple[int, ...]] = (34, 35, 45, 52, 54, 104, 138, 139, 159, 167, 185, 192)


class Category(NamedTuple):
    """A catalogue category: name, median price (USD), price spread (log-sigma), search terms."""

    name: str
    median: float
    sigma: float
    terms: tuple[str, ...]


CATEGORIES: Final[tuple[Category, ...]] = (
    Category("electronics", 120.0, 0.9, ("tv", "monitor", "smart watch", "drone", "camera")),
    Category("phones", 350.0, 0.6, ("iphone", "galaxy", "pixel", "phone case", "charger")),
    Category("computers", 600.0, 0.6, ("laptop", "macbook", "ssd", "keyboard", "gpu")),
    Category("audio", 60.0, 0.9, ("headphones", "earbuds", "speaker", "soundbar")),
    Category("gaming", 45.0, 0.8, ("ps5 game", "controller", "switch", "gaming chair")),
    Category("fashion_women", 35.0, 0.7, ("dress", "blouse", "coat", "handbag", "jeans")),
    Category("fashion_men", 35.0, 0.7, ("shirt", "hoodie", "jacket", "chinos", "suit")),
    Category("shoes", 70.0, 0.6, ("sneakers", "boots", "running shoes", "sandals")),
    Category("jewelry", 80.0, 1.1, ("necklace", "ring", "earrings", "watch")),
    Category("beauty", 18.0, 0.7, ("lipstick", "serum", "perfume", "moisturizer")),
    Category("health", 15.0, 0.7, ("vitamins", "protein", "thermometer", "toothbrush")),
    Category("home", 40.0, 0.9, ("lamp", "rug", "curtains", "bedding", "mirror")),
    Category("kitchen", 30.0, 0.9, ("air fryer", "coffee maker", "knife set", "pan")),
    Category("garden", 35.0, 0.9, ("hose", "planter", "lawn mower", "seeds")),
    Category("toys", 25.0, 0.8, ("lego", "doll", "puzzle", "rc car", "board game")),
    Category("sports", 40.0, 0.9, ("yoga mat", "dumbbells", "bike helmet", "tent")),
    Category("books", 14.0, 0.5, ("novel", "cookbook", "thriller", "kids book")),
    Category("grocery", 8.0, 0.6, ("coffee", "olive oil", "snacks", "tea")),
    Category("pet", 20.0, 0.8, ("dog food", "cat litter", "leash", "aquarium")),
    Category("auto", 30.0, 1.0, ("dash cam", "car charger", "wipers", "tyre inflator")),
    Category("gift_cards", 50.0, 0.6, ("gift card", "e-gift card", "voucher")),
)

#: Ordinary browsers and the shop's own app; attackers use these most of the time too.
USER_AGENTS: Final[tuple[str, ...]] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Mobile Safari/537.36",
    "ShopApp/5.12.1 (iPhone; iOS 18.1; Scale/3.00)",
    "ShopApp/5.12.0 (Android 14; SM-A546B)",
)

#: What some scrapers admit to being.
BOT_USER_AGENTS: Final[tuple[str, ...]] = (
    "python-requests/2.32.3",
    "Scrapy/2.11.2 (+https://scrapy.org)",
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/130.0.0.0 Safari/537.36",
    "Go-http-client/2.0",
)

#: Session entry points; None is a direct visit (no referrer field).
REFERRERS: Final[tuple[str | None, ...]] = (
    None,
    None,
    None,
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://l.facebook.com/",
    "https://www.instagram.com/",
    "https://t.co/",
    "https://newsletter.shop.example/weekly",
    "https://ads.adnet.example/c?cmp=autumn_sale",
    "https://deals.dealforum.example/hot",
)

#: Codes anyone can find; promotion rings redeem the same ones (the "new user" codes above all).
PUBLIC_COUPONS: Final[tuple[str, ...]] = (
    "WELCOME10",
    "NEWUSER20",
    "SAVE15",
    "FREESHIP",
    "APP5",
    "LOYAL10",
    "CYBER25",
)

REVIEW_TEXTS: Final[tuple[str, ...]] = (
    "Works as described, fast delivery.",
    "Good value for the price.",
    "Smaller than I expected but fine.",
    "Stopped working after two weeks, disappointed.",
    "Great quality, would buy again!",
    "Colour is a bit different from the photos.",
    "Arrived late but the seller was helpful.",
    "Exactly what I needed.",
    "Meh. Returned it.",
    "Five stars, my kids love it.",
)

#: Relative activity by local hour: night trough, morning, lunch and evening peaks.
HOURLY_WEIGHTS: Final[tuple[float, ...]] = (
    0.30,
    0.18,
    0.10,
    0.07,
    0.06,
    0.08,
    0.18,
    0.40,  # 00-07
    0.70,
    0.85,
    0.80,
    0.85,
    1.10,
    1.05,
    0.80,
    0.75,  # 08-15
    0.80,
    0.90,
    1.10,
    1.35,
    1.50,
    1.40,
    1.00,
    0.60,  # 16-23
)
