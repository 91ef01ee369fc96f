"""`simulate_world`: build the world, write every account's events, then the labels and the
delayed feedback, with a progress bar."""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tqdm import tqdm

from events.terminal import bars_wanted
from simulator.abnormal import click_bot, click_farm, scraper
from simulator.config import ATTACK_KINDS, WorldConfig, WorldSummary
from simulator.core import Actor, Stats, rng_for
from simulator.exceptions import SimulationError
from simulator.fraud import account_takeover, card_testing, checkout_bot, promo_abuse
from simulator.hard import (
    click_injection,
    session_takeover,
    slow_card_testing,
    slow_promo_abuse,
    stealth_scraper,
)
from simulator.kit import actor_for
from simulator.normal import run_normal_user
from simulator.world import VICTIM_KINDS, Plan, Profile, World, build_world
from simulator.writer import EventSink, write_feedback, write_labels

__all__ = ["EVENTS_FILE", "FEEDBACK_FILE", "LABELS_FILE", "simulate_world"]

EVENTS_FILE: Final = "events.jsonl"
LABELS_FILE: Final = "labels.jsonl"
FEEDBACK_FILE: Final = "feedback.jsonl"

_Attack = Callable[[World, Plan, random.Random, list[bytes], Stats], None]
# Account takeover is not here: it runs inside its victim's turn (it needs the victim's gaps).
_GROUP_ATTACKS: Final[dict[str, _Attack]] = {
    "card_testing": card_testing,
    "promo_abuse": promo_abuse,
    "checkout_bot": checkout_bot,
    "click_bot": click_bot,
    "scraper": scraper,
    "click_farm": click_farm,
    "slow_card_testing": slow_card_testing,
    "slow_promo_abuse": slow_promo_abuse,
    "stealth_scraper": stealth_scraper,
}
# Attacks inside a victim's own sessions: they read the victim's events back from the sink.
_Inside = Callable[
    [World, Profile, Actor, list[bytes], int, list[tuple[int, int]], random.Random, Stats], None
]
_VICTIM_ATTACKS: Final[dict[str, _Inside]] = {
    "session_takeover": session_takeover,
    "click_injection": click_injection,
}


def simulate_world(config: WorldConfig, out_dir: Path, progress: bool = True) -> WorldSummary:
    """Simulate `config` and write `events.jsonl`, `labels.jsonl` and `feedback.jsonl`.

    Events are sorted by (ts, event_id); the same config always gives byte-identical files.
    Raises `SimulationError` for a bad config or an output path that is not a directory.
    """
    if not isinstance(config, WorldConfig):
        raise SimulationError(f"config must be a WorldConfig, got {type(config).__name__}")
    began = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SimulationError(f"out_dir must be a directory, got a file: {out}")
    out.mkdir(parents=True, exist_ok=True)
    world = build_world(config)
    seed, stats = config.seed, Stats()
    with tempfile.TemporaryDirectory(prefix=".simulate-", dir=out) as tmp:
        sink = EventSink(Path(tmp))
        with tqdm(
            total=config.users, desc="simulate", unit="user", disable=not bars_wanted(progress)
        ) as bar:
            for i in range(world.n_normal):
                profile = world.profiles[i]
                actor = actor_for(world, profile, sink.lines, stats)
                first = len(sink.lines)  # the sink only grows within one user's turn
                spans = run_normal_user(world, profile, actor, rng_for(seed, 2, i), stats)
                plan = world.victims.get(i)
                if plan is not None:
                    rng = rng_for(seed, 4, plan.group)
                    if plan.kind == "account_takeover":
                        account_takeover(world, profile, actor, spans, rng, stats)
                    else:
                        inside = _VICTIM_ATTACKS[plan.kind]
                        inside(world, profile, actor, sink.lines, first, spans, rng, stats)
                sink.maybe_spill()
                bar.update(1)
            for plan in world.plans:
                if plan.kind in _GROUP_ATTACKS:
                    _GROUP_ATTACKS[plan.kind](
                        world, plan, rng_for(seed, 4, plan.group), sink.lines, stats
                    )
                    sink.maybe_spill()
                    bar.update(len(plan.accounts))
        n_events = sink.write(out / EVENTS_FILE, progress)
    write_labels(out / LABELS_FILE, stats.episodes)
    chargebacks = write_feedback(out / FEEDBACK_FILE, seed, stats.fraud_orders)
    episodes = dict.fromkeys((k for k in ATTACK_KINDS if k in config.attack_kinds), 0)
    for episode in stats.episodes:
        episodes[episode.kind] += 1
    taken_over = {e.user_id for e in stats.episodes if e.kind in VICTIM_KINDS}
    return WorldSummary(
        events=n_events,
        users=config.users,
        normal_users=world.n_normal,
        attacked_users=len(taken_over),
        attacker_users=config.users - world.n_normal,
        episodes_per_kind=episodes,
        events_per_type=dict(stats.type_counts),
        sessions=stats.sessions,
        sessions_with_purchase=stats.purchase_sessions,
        purchase_rate=stats.purchase_sessions / stats.sessions if stats.sessions else 0.0,
        chargebacks=chargebacks,
        wall_s=round(time.perf_counter() - began, 3),
    )
