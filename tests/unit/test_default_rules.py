"""The shipped rules (config/rules.yaml) on simulated worlds, with the default N = 64 windows:
silent on normal users, firing on click bots and scrapers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from events import EncodingSpec, encode_event, parse_event
from events.window import InMemoryWindowStore, WindowPolicy, select_window
from simulator import WorldConfig, simulate_world
from stream.rules import RuleSet, load_rules

RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"
SPEC = EncodingSpec()
POLICY = WindowPolicy(max_events=64)

pytestmark = pytest.mark.slow


def _users_fired(world: Path, rules: RuleSet) -> set[str]:
    store = InMemoryWindowStore(POLICY)
    users, windows = [], []
    for line in (world / "events.jsonl").read_bytes().splitlines():
        event = parse_event(line)
        stored = store.append(event.user_id, encode_event(event, SPEC)).stored
        users.append(event.user_id)
        windows.append(select_window(stored, POLICY))
    fired: set[str] = set()
    for start in range(0, len(windows), 256):
        chunk = slice(start, start + 256)
        for user, hits in zip(users[chunk], rules.firing_batch(windows[chunk]), strict=True):
            if hits:
                fired.add(user)
    return fired


def test_default_rules_spare_normal_users_and_catch_click_bots(tmp_path: Path) -> None:
    rules = load_rules(RULES, SPEC)
    normal = tmp_path / "normal"
    simulate_world(WorldConfig(users=2000, days=1.0, seed=21, attack_share=0.0), normal,
                   progress=False)  # fmt: skip
    assert _users_fired(normal, rules) == set()  # the 900 s version alerted 30 of these users

    bots = tmp_path / "bots"
    kinds = frozenset({"click_bot", "scraper"})
    simulate_world(WorldConfig(users=600, days=1.0, seed=22, attack_share=0.1, attack_kinds=kinds),
                   bots, progress=False)  # fmt: skip
    labels = [orjson.loads(line) for line in (bots / "labels.jsonl").read_bytes().splitlines()]
    attackers = {lab["user_id"] for lab in labels}
    fired = _users_fired(bots, rules)
    assert fired <= attackers
    assert len(fired) >= len(attackers) // 3
