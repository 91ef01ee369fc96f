"""What a simulated world is asked to be (`WorldConfig`) and what it turned out to be
(`WorldSummary`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Final

from simulator.exceptions import SimulationError

__all__ = [
    "ATTACK_KINDS",
    "ATTACK_PRESETS",
    "CLASSIC_KINDS",
    "FRAUD_KINDS",
    "HARD_KINDS",
    "KINDS_BY_LABEL",
    "KIND_LABEL",
    "WorldConfig",
    "WorldSummary",
]

#: Attack kind -> the label its episodes carry.
KIND_LABEL: Final[dict[str, str]] = {
    "card_testing": "fraud",
    "account_takeover": "fraud",
    "promo_abuse": "fraud",
    "checkout_bot": "fraud",
    "click_bot": "abnormal_click",
    "scraper": "abnormal_click",
    "click_farm": "abnormal_click",
    # The hard kinds: window counts like a customer's; the signal is in order, timing and
    # context relative to the user's own history (see docs/training.md).
    "session_takeover": "fraud",
    "slow_card_testing": "fraud",
    "slow_promo_abuse": "fraud",
    "click_injection": "abnormal_click",
    "stealth_scraper": "abnormal_click",
}
#: The twelve attack kinds, in a fixed order (planning walks them in this order).
ATTACK_KINDS: Final[tuple[str, ...]] = tuple(KIND_LABEL)
#: The kinds that hide inside customer-like aggregates (a 'hard-only' world has just these).
HARD_KINDS: Final[tuple[str, ...]] = (
    "session_takeover",
    "slow_card_testing",
    "slow_promo_abuse",
    "click_injection",
    "stealth_scraper",
)
#: The first seven kinds, whose counts or timing alone mostly give them away.
CLASSIC_KINDS: Final[tuple[str, ...]] = tuple(k for k in ATTACK_KINDS if k not in HARD_KINDS)
#: Named sets of kinds for `riskstream simulate --attacks NAME`.
ATTACK_PRESETS: Final[dict[str, tuple[str, ...]]] = {
    "all": ATTACK_KINDS,
    "classic": CLASSIC_KINDS,
    "hard": HARD_KINDS,
}
FRAUD_KINDS: Final[tuple[str, ...]] = tuple(k for k, v in KIND_LABEL.items() if v == "fraud")
#: Label -> its kinds, e.g. KINDS_BY_LABEL["fraud"][0] == "card_testing".
KINDS_BY_LABEL: Final[dict[str, tuple[str, ...]]] = {
    label: tuple(k for k, v in KIND_LABEL.items() if v == label)
    for label in ("fraud", "abnormal_click")
}

DEFAULT_START: Final = datetime(2026, 11, 2, tzinfo=UTC)
MAX_USERS: Final = 1 << 33  # ids keep 34 bits for the account number


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """A world to simulate: `users` accounts over `days` days from `start`, seeded by `seed`.

    About `attack_share` of the users are involved in attacks (attacker accounts, and victims of
    account takeover), split over `attack_kinds`.

    >>> WorldConfig(users=10, days=1, seed=1).attack_share
    0.02
    """

    users: int
    days: float
    seed: int
    attack_share: float = 0.02
    attack_kinds: frozenset[str] = field(default_factory=lambda: frozenset(ATTACK_KINDS))
    start: datetime = DEFAULT_START

    def __post_init__(self) -> None:
        if isinstance(self.users, bool) or not isinstance(self.users, int):
            raise SimulationError(f"users must be an int, got {self.users!r}")
        if not 1 <= self.users <= MAX_USERS:
            raise SimulationError(f"users must be between 1 and {MAX_USERS}, got {self.users}")
        if isinstance(self.days, bool) or not isinstance(self.days, int | float):
            raise SimulationError(f"days must be a number, got {self.days!r}")
        if not (math.isfinite(self.days) and self.days > 0):
            raise SimulationError(f"days must be > 0, got {self.days}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SimulationError(f"seed must be an int, got {self.seed!r}")
        share = self.attack_share
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise SimulationError(f"attack_share must be a number, got {share!r}")
        if not 0.0 <= share <= 0.5:  # also rejects NaN
            raise SimulationError(f"attack_share must be in [0, 0.5], got {share}")
        if not isinstance(self.attack_kinds, frozenset):
            raise SimulationError(
                f"attack_kinds must be a frozenset, got {type(self.attack_kinds).__name__}"
            )
        unknown = sorted(str(k) for k in self.attack_kinds if k not in KIND_LABEL)
        if unknown:
            raise SimulationError(
                f"attack_kinds has unknown kind(s) {unknown}; known: {list(ATTACK_KINDS)}"
            )
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise SimulationError(f"start must be a timezone-aware datetime, got {self.start!r}")
        if self.start.timestamp() < 0:
            raise SimulationError(f"start must not be before 1970, got {self.start.isoformat()}")

    @property
    def start_ms(self) -> int:
        """The first instant of the world, epoch milliseconds UTC."""
        return round(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """Where session starts stop (sessions begun before it may finish a little after)."""
        return self.start_ms + round(self.days * 86_400_000)


@dataclass(frozen=True, slots=True)
class WorldSummary:
    """What was written. `sessions` and `purchase_rate` count normal users' sessions only.

    `attacked_users` are normal accounts attacked from inside (taken over, or click-injected on
    their own device); `attacker_users` are accounts that exist
    only for an attack. `episodes_per_kind` has one entry per enabled kind, `events_per_type`
    one per contract type; `wall_s` is the wall-clock seconds the whole run took.
    """

    events: int
    users: int
    normal_users: int
    attacked_users: int
    attacker_users: int
    episodes_per_kind: dict[str, int]
    events_per_type: dict[str, int]
    sessions: int
    sessions_with_purchase: int
    purchase_rate: float
    chargebacks: int
    wall_s: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (copies of the nested dicts)."""
        return asdict(self)
