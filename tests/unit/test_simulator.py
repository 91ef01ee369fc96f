"""The labelled world simulator: determinism, the event/label/feedback contracts, realism checks."""

from __future__ import annotations

import ast
import functools
import ipaddress
import itertools
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from events.contract import EVENT_TYPES, OPTIONAL_FIELDS, REQUIRED_FIELDS
from events.exceptions import RiskstreamError
from events.parse import parse_event, parse_label
from simulator import (
    ATTACK_KINDS,
    ATTACK_PRESETS,
    EVENTS_FILE,
    FEEDBACK_FILE,
    HARD_KINDS,
    KIND_LABEL,
    LABELS_FILE,
    WorldConfig,
    WorldSummary,
    simulate_world,
)
from simulator import core as sim_core
from simulator import simulate as sim_module
from simulator.exceptions import SimulationError
from simulator.tables import CATEGORIES
from simulator.world import VICTIM_KINDS
from simulator.writer import EventSink

DAY_MS = 86_400_000
# Enough attackers in a small world for every kind to get at least one group.
SMALL = WorldConfig(users=300, days=1, seed=11, attack_share=0.15)
RFC3339_LOCAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def ts_ms(ts: str | int) -> int:
    if isinstance(ts, int):
        return ts
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


@dataclass
class World:
    path: Path
    summary: WorldSummary
    events: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    feedback: list[dict[str, Any]]

    @functools.cached_property
    def by_user(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in self.events:
            out[e["user_id"]].append(e)
        return out

    def in_episode(self, label: dict[str, Any]) -> list[dict[str, Any]]:
        lo, hi = ts_ms(label["start"]), ts_ms(label["end"])
        return [e for e in self.by_user[label["user_id"]] if lo <= ts_ms(e["ts"]) <= hi]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def make_world(config: WorldConfig, path: Path) -> World:
    summary = simulate_world(config, path, progress=False)
    return World(
        path,
        summary,
        read_lines(path / EVENTS_FILE),
        read_lines(path / LABELS_FILE),
        read_lines(path / FEEDBACK_FILE),
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(SMALL, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(WorldConfig(users=2000, days=1, seed=3), tmp_path_factory.mktemp("medium"))


def files(path: Path) -> list[bytes]:
    return [(path / name).read_bytes() for name in (EVENTS_FILE, LABELS_FILE, FEEDBACK_FILE)]


def test_same_config_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    config = WorldConfig(users=150, days=0.5, seed=5, attack_share=0.2)
    simulate_world(config, tmp_path / "a", progress=False)
    simulate_world(config, tmp_path / "b", progress=False)
    simulate_world(replace(config, seed=6), tmp_path / "c", progress=False)
    first, again, other = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert first == again
    assert first[0] != other[0]
    assert first[1] != other[1]
    assert len(first[0]) > 10_000


def test_spilled_runs_merge_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = WorldConfig(users=120, days=0.5, seed=9, attack_share=0.2)
    simulate_world(config, tmp_path / "memory", progress=False)
    # Spill after a few hundred lines so that the on-disk merge path runs.
    monkeypatch.setattr(sim_module, "EventSink", functools.partial(EventSink, spill_at=300))
    simulate_world(config, tmp_path / "spilled", progress=False)
    assert files(tmp_path / "memory") == files(tmp_path / "spilled")
    assert not [p for p in (tmp_path / "spilled").iterdir() if p.name.startswith(".")]


def test_every_event_keeps_the_contract(small: World) -> None:
    categories = {c.name for c in CATEGORIES}
    allowed = set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
    assert len(small.events) == small.summary.events > 1000
    for e in small.events:
        assert set(REQUIRED_FIELDS) <= e.keys() <= allowed, e
        assert None not in e.values(), e
        assert isinstance(e["event_id"], str)
        assert e["event_id"]
        assert isinstance(e["user_id"], str)
        assert e["user_id"]
        assert e["type"] in EVENT_TYPES
        ts = e["ts"]
        assert (isinstance(ts, int) and ts > 0) or RFC3339_LOCAL.match(ts), ts
        for money in ("price", "amount"):
            if money in e:
                assert isinstance(e[money], int | float)
                assert e[money] >= 0
                assert round(e[money], 2) == e[money]
        if "quantity" in e:
            assert isinstance(e["quantity"], int)
            assert e["quantity"] >= 1
        if "country" in e:
            assert re.fullmatch(r"[A-Z]{2}", e["country"])
        if "ip" in e:
            ipaddress.ip_address(e["ip"])
        if "category" in e:
            assert e["category"] in categories
        if e["type"] == "purchase":
            assert {"order_id", "amount"} <= e.keys()
        if e["type"] == "payment_failed":
            assert {"amount", "payment_method"} <= e.keys()


def test_timestamps_come_in_both_forms_with_local_offsets(small: World) -> None:
    forms = [e["ts"] for e in small.events]
    epoch = [ts for ts in forms if isinstance(ts, int)]
    text = [ts for ts in forms if isinstance(ts, str)]
    assert 0 < len(epoch) < 0.2 * len(forms)
    offsets = {ts[-6:] for ts in text}
    assert len(offsets) >= 5  # users live in several time zones
    # A user's events all use one form and one offset.
    per_user: dict[str, set[str]] = defaultdict(set)
    for e in small.events:
        per_user[e["user_id"]].add("epoch" if isinstance(e["ts"], int) else e["ts"][-6:])
    assert all(len(forms) == 1 for forms in per_user.values())


def test_event_ids_are_unique(medium: World) -> None:
    ids = [e["event_id"] for e in medium.events]
    assert len(ids) == len(set(ids))


def test_events_are_sorted_by_time_then_id(small: World) -> None:
    keys = [(ts_ms(e["ts"]), e["event_id"]) for e in small.events]
    assert all(a < b for a, b in itertools.pairwise(keys))


def test_all_twelve_kinds_are_present_by_default(small: World) -> None:
    assert len(ATTACK_KINDS) == 12
    assert set(WorldConfig(users=1, days=1, seed=0).attack_kinds) == set(ATTACK_KINDS)
    kinds = {label["kind"] for label in small.labels}
    assert kinds == set(ATTACK_KINDS)
    assert all(n > 0 for n in small.summary.episodes_per_kind.values())
    assert sum(small.summary.episodes_per_kind.values()) == len(small.labels)


def test_every_episode_is_bounded_by_its_own_events(small: World) -> None:
    by_user = small.by_user
    for label in small.labels:
        assert RFC3339_UTC.match(label["start"])
        assert RFC3339_UTC.match(label["end"])
        assert label["label"] == KIND_LABEL[label["kind"]]
        assert label["source"] == "simulator"
        lo, hi = ts_ms(label["start"]), ts_ms(label["end"])
        assert lo <= hi
        times = {ts_ms(e["ts"]) for e in by_user[label["user_id"]]}
        assert lo in times
        assert hi in times


def test_takeover_episodes_hold_only_the_attackers_session(small: World) -> None:
    takeovers = [label for label in small.labels if label["kind"] == "account_takeover"]
    assert takeovers
    for label in takeovers:
        inside = small.in_episode(label)
        assert len({e["session_id"] for e in inside}) == 1
        assert any(e["type"] == "login" for e in inside)
        assert any(e["type"] == "purchase" for e in inside)
        own = small.by_user[label["user_id"]]
        home = {e["device_id"] for e in own if e not in inside}
        assert inside[0]["device_id"] not in home  # a new device


def test_switching_kinds_off_removes_their_episodes(tmp_path: Path) -> None:
    off = {"scraper", "card_testing", "account_takeover", "session_takeover", "click_injection"}
    config = replace(SMALL, attack_kinds=frozenset(ATTACK_KINDS) - off)
    world = make_world(config, tmp_path)
    kinds = {label["kind"] for label in world.labels}
    assert kinds == set(ATTACK_KINDS) - off
    assert set(world.summary.episodes_per_kind) == set(ATTACK_KINDS) - off
    assert world.summary.attacked_users == 0


def test_no_attacks_means_no_labels_and_no_feedback(tmp_path: Path) -> None:
    world = make_world(replace(SMALL, attack_share=0.0), tmp_path)
    assert world.labels == []
    assert world.feedback == []
    assert world.summary.attacker_users == 0
    assert world.summary.normal_users == SMALL.users
    assert world.summary.episodes_per_kind == dict.fromkeys(ATTACK_KINDS, 0)
    assert world.events


def test_purchase_rate_of_normal_sessions_is_realistic(medium: World) -> None:
    s = medium.summary
    assert 0.01 <= s.purchase_rate <= 0.05
    assert s.purchase_rate == s.sessions_with_purchase / s.sessions
    # Recount from the file: sessions of users with no attack label outside their episodes
    # (victims' own sessions count; a takeover or an injected burst does not).
    attackers = {lb["user_id"] for lb in medium.labels if lb["kind"] not in VICTIM_KINDS}
    takeover = {
        id(e) for lb in medium.labels if lb["kind"] in VICTIM_KINDS for e in medium.in_episode(lb)
    }
    sessions: dict[str, bool] = {}
    for e in medium.events:
        if e["user_id"] in attackers or id(e) in takeover:
            continue
        sid = e["session_id"]
        sessions[sid] = sessions.get(sid, False) or e["type"] == "purchase"
    assert len(sessions) == s.sessions
    assert sum(sessions.values()) == s.sessions_with_purchase


def test_chargebacks_follow_fraudulent_purchases(small: World) -> None:
    fraud_orders = {}
    for label in small.labels:
        if label["label"] == "fraud":
            for e in small.in_episode(label):
                if e["type"] == "purchase":
                    fraud_orders[e["order_id"]] = ts_ms(e["ts"])
    assert fraud_orders
    assert 0.5 * len(fraud_orders) <= len(small.feedback) <= len(fraud_orders)
    for back in small.feedback:
        assert back["kind"] == "chargeback"
        assert RFC3339_UTC.match(back["ts"])
        delay = ts_ms(back["ts"]) - fraud_orders[back["order_id"]]
        assert DAY_MS <= delay <= 20 * DAY_MS
    assert small.summary.chargebacks == len(small.feedback)


def _gaps_s(events: list[dict[str, Any]]) -> list[float]:
    times = [ts_ms(e["ts"]) for e in events]
    return [(b - a) / 1000 for a, b in itertools.pairwise(times)]


def test_attacks_have_their_signature(small: World) -> None:
    by_kind: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for label in small.labels:
        by_kind[label["kind"]].append(small.in_episode(label))
    for episode in by_kind["checkout_bot"]:  # inhuman speed
        assert statistics.median(_gaps_s(episode)) < 1.0
        assert any(e["type"] == "purchase" and e["quantity"] >= 2 for e in episode)
    for episode in by_kind["card_testing"]:
        types = [e["type"] for e in episode]
        assert types.count("payment_failed") >= types.count("purchase")
        assert types.count("payment_failed") + types.count("purchase") >= 8
    for episode in by_kind["click_bot"]:
        assert sum(e["type"] == "click" for e in episode) > 0.5 * len(episode)
        assert not any(e["type"] == "purchase" for e in episode)
    for episode in by_kind["scraper"]:
        views = [int(e["item_id"][1:]) for e in episode if "item_id" in e]
        steps = [b - a for a, b in itertools.pairwise(views)]
        assert sum(step == 1 for step in steps) > 0.8 * len(steps)  # sequential ids
    promo_codes = {
        label["user_id"]: {e["coupon_code"] for e in small.in_episode(label) if "coupon_code" in e}
        for label in small.labels
        if label["kind"] == "promo_abuse"
    }
    assert all(len(codes) == 1 for codes in promo_codes.values())
    for episode in by_kind["click_farm"]:
        assert not any(e["type"] == "purchase" for e in episode)
        assert any("referrer" in e for e in episode)


def test_normal_users_include_legitimate_oddities(medium: World) -> None:
    labelled = {lb["user_id"] for lb in medium.labels}
    normal = [e for e in medium.events if e["user_id"] not in labelled]
    users_of_device: dict[str, set[str]] = defaultdict(set)
    for e in normal:
        users_of_device[e["device_id"]].add(e["user_id"])
    assert any(len(users) == 2 for users in users_of_device.values())  # households
    assert any(e["type"] == "login_failed" for e in normal)  # mistyped passwords
    assert any(e["type"] == "payment_failed" for e in normal)  # declined cards
    countries: dict[str, set[str]] = defaultdict(set)
    for e in normal:
        countries[e["user_id"]].add(e["country"])
    assert any(len(c) > 1 for c in countries.values())  # travel and VPNs


def test_summary_matches_the_files(small: World) -> None:
    s = small.summary
    counted = dict.fromkeys(EVENT_TYPES, 0)
    for e in small.events:
        counted[e["type"]] += 1
    assert s.events_per_type == counted
    assert s.users == SMALL.users == s.normal_users + s.attacker_users
    assert 1 <= s.attacked_users <= s.normal_users
    assert s.wall_s > 0
    assert orjson.loads(orjson.dumps(s.to_dict()))["events"] == len(small.events)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"users": 0}, "users"),
        ({"days": 0}, "days"),
        ({"days": float("nan")}, "days"),
        ({"attack_share": 0.6}, "attack_share"),
        ({"attack_share": -0.1}, "attack_share"),
        ({"attack_kinds": frozenset({"click_bot", "phishing"})}, "attack_kinds"),
        ({"start": datetime(2026, 11, 2)}, "start"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, Any], argument: str) -> None:
    config: dict[str, Any] = {"users": 10, "days": 1.0, "seed": 1, **kwargs}
    with pytest.raises(SimulationError, match=argument) as caught:
        WorldConfig(**config)
    assert isinstance(caught.value, RiskstreamError)  # the CLI's one-line errors


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    with pytest.raises(SimulationError, match="out_dir"):
        simulate_world(SMALL, target, progress=False)


def test_simulator_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import training, simulator"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
    # The simulator itself is pure Python: stdlib, orjson and tqdm (no numpy either).
    package = Path(sim_core.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not [n for n in names if n.split(".")[0] in {"numpy", "torch"}], module


def test_the_contract_parser_accepts_every_line(small: World) -> None:
    lines = (small.path / EVENTS_FILE).read_bytes().splitlines()
    for line, event in zip(lines, small.events, strict=True):
        parsed = parse_event(line, now_ms=1 << 50)
        assert parsed.type == event["type"]
        assert parsed.type != "other"
        assert parsed.ts_ms == ts_ms(event["ts"])
    for line in (small.path / LABELS_FILE).read_bytes().splitlines():
        label = parse_label(line)
        assert label.start_ms <= label.end_ms
        assert label.source == "simulator"


# --- The hard kinds: customer-like counts, the signal in order, timing and context. ---

HARD = WorldConfig(users=400, days=2, seed=11, attack_share=0.2, attack_kinds=frozenset(HARD_KINDS))
_CHANGES = {"password_reset", "address_change", "payment_method_add"}


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(HARD, tmp_path_factory.mktemp("hard"))


def _episodes(world: World, kind: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    out = [(lb, world.in_episode(lb)) for lb in world.labels if lb["kind"] == kind]
    assert out, kind
    return out


def test_presets_name_the_hard_kinds() -> None:
    assert set(HARD_KINDS) <= set(ATTACK_KINDS)
    assert set(ATTACK_PRESETS["hard"]) == set(HARD_KINDS)
    assert set(ATTACK_PRESETS["classic"]) | set(HARD_KINDS) == set(ATTACK_PRESETS["all"])
    assert {KIND_LABEL[k] for k in HARD_KINDS} == {"fraud", "abnormal_click"}


def test_a_hard_only_world_has_only_and_all_hard_kinds(hard: World) -> None:
    assert {lb["kind"] for lb in hard.labels} == set(HARD_KINDS)
    assert set(hard.summary.episodes_per_kind) == set(HARD_KINDS)
    assert hard.summary.attacked_users >= 2  # takeover and injection victims


def test_session_takeover_uses_the_victims_own_device_address_and_country(hard: World) -> None:
    for label, inside in _episodes(hard, "session_takeover"):
        own = [e for e in hard.by_user[label["user_id"]] if e not in inside]
        assert own  # a real customer, with sessions of their own
        for field in ("device_id", "ip", "country", "user_agent"):
            assert {e[field] for e in inside} <= {e[field] for e in own}, field
        assert len({e["session_id"] for e in inside}) == 1
        types = [e["type"] for e in inside]
        # Account changes first, then the order.
        first_change = min(i for i, t in enumerate(types) if t in _CHANGES)
        assert first_change < types.index("add_to_cart") < types.index("purchase")
        # Well above the victim's own prices, in a category they never bought.
        own_prices = sorted(e["price"] for e in own if "price" in e)
        paid = next(e for e in inside if e["type"] == "purchase")
        if own_prices:
            assert paid["amount"] > own_prices[len(own_prices) // 2]
        cart = next(e for e in inside if e["type"] == "add_to_cart")
        bought_before = {c for e in own if e["type"] == "add_to_cart" for c in [e["category"]]}
        assert cart["category"] not in bought_before
        # It starts after the trainer's 30-min session gap from the victim's last event.
        start = ts_ms(inside[0]["ts"])
        before = [ts_ms(e["ts"]) for e in own if ts_ms(e["ts"]) < start]
        assert not before or start - max(before) > 30 * 60_000


def test_session_takeover_often_rides_the_victims_open_session(hard: World) -> None:
    shared = 0
    for label, inside in _episodes(hard, "session_takeover"):
        own_sessions = {e["session_id"] for e in hard.by_user[label["user_id"]] if e not in inside}
        shared += inside[0]["session_id"] in own_sessions
    assert shared >= 1


def test_click_injection_bursts_interleave_with_the_victims_own_session(hard: World) -> None:
    followed = 0
    for label, inside in _episodes(hard, "click_injection"):
        assert [e["type"] for e in inside] == ["click", "page_view"]
        timeline = hard.by_user[label["user_id"]]
        lo, hi = ts_ms(label["start"]), ts_ms(label["end"])
        before = [e for e in timeline if ts_ms(e["ts"]) < lo]
        after = [e for e in timeline if ts_ms(e["ts"]) > hi]
        # Right after one of the victim's own page loads, in the same session and device.
        assert before[-1]["type"] == "page_view"
        assert before[-1]["session_id"] == inside[0]["session_id"]
        assert before[-1]["device_id"] == inside[0]["device_id"]
        assert 0 < lo - ts_ms(before[-1]["ts"]) <= 3_000
        followed += bool(after) and after[0]["session_id"] == inside[0]["session_id"]
    assert followed >= 3  # the victim goes on browsing after the burst


def test_click_injection_labels_hold_only_injected_events(hard: World) -> None:
    injected = {e["event_id"] for _, inside in _episodes(hard, "click_injection") for e in inside}
    victims = {lb["user_id"] for lb in hard.labels if lb["kind"] == "click_injection"}
    own = [e for u in victims for e in hard.by_user[u] if e["event_id"] not in injected]
    assert len(own) > len(injected)  # the victims' genuine browsing stays negative
    bursts = len(_episodes(hard, "click_injection"))
    assert len(injected) == 2 * bursts


def test_slow_card_testing_spans_hours_with_human_gaps(hard: World) -> None:
    for _, inside in _episodes(hard, "slow_card_testing"):
        times = [ts_ms(e["ts"]) for e in inside]
        assert times[-1] - times[0] > 3_600_000
        assert statistics.median(_gaps_s(inside)) > 3.0
        assert len({e["session_id"] for e in inside}) >= 3
        tried = [e for e in inside if e["type"] in ("payment_failed", "purchase")]
        assert tried
        baskets = {e["price"] for e in inside if e["type"] == "add_to_cart"}
        assert {e["amount"] for e in tried} <= baskets  # one small item per basket
        assert len({e["payment_method"] for e in tried}) == len(tried)  # a fresh card each


def test_slow_promo_abuse_spreads_one_code_over_accounts_and_hours(hard: World) -> None:
    episodes = _episodes(hard, "slow_promo_abuse")
    for _, inside in episodes:
        assert statistics.median(_gaps_s(inside)) > 3.0
        assert any(e["type"] == "coupon_apply" for e in inside)
        assert any(e["type"] == "purchase" for e in inside)
        assert len({e["device_id"] for e in inside}) == 1
    devices = {inside[0]["device_id"] for _, inside in episodes}
    assert len(devices) == len(episodes)  # one device per account: no shared phone to link
    starts = [ts_ms(lb["start"]) for lb, _ in episodes]
    assert max(starts) - min(starts) > 3_600_000


def test_stealth_scraper_cycles_categories_at_human_pace_and_never_buys(hard: World) -> None:
    for _, inside in _episodes(hard, "stealth_scraper"):
        types = {e["type"] for e in inside}
        assert types <= {"page_view", "click", "search"}
        assert statistics.median(_gaps_s(inside)) > 2.0
        listings = [e["category"] for e in inside if "?page=" in e.get("page", "")]
        cycle = list(dict.fromkeys(listings))
        assert len(cycle) >= 4
        # The same fixed order of categories, round after round.
        assert listings == [cycle[i % len(cycle)] for i in range(len(listings))]


def test_hard_worlds_are_deterministic_and_switch_off(tmp_path: Path) -> None:
    config = replace(HARD, users=200, days=1)
    simulate_world(config, tmp_path / "a", progress=False)
    simulate_world(config, tmp_path / "b", progress=False)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    kept = frozenset({"slow_card_testing", "stealth_scraper"})
    world = make_world(replace(config, attack_kinds=kept), tmp_path / "c")
    assert {lb["kind"] for lb in world.labels} == kept
    assert world.summary.attacked_users == 0


def test_the_simulate_command_takes_a_preset_or_named_kinds() -> None:
    from training.cli import _config

    assert _config(10, 1, 0, 0.1, [], "hard").attack_kinds == frozenset(HARD_KINDS)
    assert _config(10, 1, 0, 0.1, ["click_injection"], "hard").attack_kinds == frozenset(
        HARD_KINDS
    ) - {"click_injection"}
    only = _config(10, 1, 0, 0.1, [], "all", ["scraper", "stealth_scraper"])
    assert only.attack_kinds == {"scraper", "stealth_scraper"}
    assert _config(10, 1, 0, 0.1, []).attack_kinds == frozenset(ATTACK_KINDS)
    with pytest.raises(SimulationError, match="--attacks"):
        _config(10, 1, 0, 0.1, [], "easy")
    with pytest.raises(SimulationError, match="--only-attack"):
        _config(10, 1, 0, 0.1, [], "all", ["phishing"])


def test_normal_users_include_the_new_confusers(medium: World) -> None:
    labelled = {lb["user_id"] for lb in medium.labels}
    by_user = {u: evs for u, evs in medium.by_user.items() if u not in labelled}
    # Gifts and big orders shipped elsewhere: an address change and a purchase, like a takeover.
    gifts = 0
    for evs in by_user.values():
        types = [e["type"] for e in evs]
        if "address_change" in types and "purchase" in types:
            gifts += 1
    assert gifts >= 5
    # A first order that puts a card in: payment_method_add right before a purchase.
    firsts = sum(
        1
        for evs in by_user.values()
        for a, b in itertools.pairwise(evs)
        if a["type"] == "payment_method_add" and b["type"] == "purchase"
    )
    assert firsts >= 1


def test_victims_with_no_visit_of_their_own_do_not_break_the_world(tmp_path: Path) -> None:
    # Short worlds and late sign-ups leave some victims without a session to hide in.
    kinds = frozenset({"session_takeover", "click_injection"})
    for seed in range(12):
        config = WorldConfig(users=40, days=0.1, seed=seed, attack_share=0.5, attack_kinds=kinds)
        summary = simulate_world(config, tmp_path / str(seed), progress=False)
        assert set(summary.episodes_per_kind) == kinds
