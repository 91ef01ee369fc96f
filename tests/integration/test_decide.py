"""The decision service over real HTTP (uvicorn, httpx) against the real Redis and the tiny
bundle: the same scores as the stream's processor on the same window, idempotency in both
orders (API first, stream first), bad input, auth and key rotation, rate limit, Redis down."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from events import EID_SLICE, RECORD_SIZE, encode_event, parse_event
from riskstream.decide import DecidePolicy, Decider, KeyStore, add_key
from riskstream.decide.web import create_app
from riskstream.localstack import find_free_port
from stream.cooldowns import CooldownStore
from stream.messages import Incoming
from stream.model_slot import ModelSlot
from stream.processor import Outcome, Processor
from stream.redis_windows import RedisWindowStore
from stream.rules import RulesFile
from stream.settings import WorkerSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW_MS = 1_900_000_000_000  # after the simulated worlds: their events are not in the future


class _Stream:
    """The worker's processor on its own prefix (no cooldowns: every alert is seen)."""

    def __init__(self, bundle: Path, client: redis.Redis, prefix: str) -> None:
        slot = ModelSlot(
            bundle, lambda p: RedisWindowStore(client, p, prefix=prefix, lateness_s=3600.0),
            "cpu", variant="fp32", threads=1,
        )  # fmt: skip
        self.serving = slot.current
        self.proc = Processor(
            RulesFile(None, self.serving.bundle.spec), CooldownStore(client, 0, prefix=prefix),
            debug_scores=True,
        )  # fmt: skip

    def process(self, lines: list[bytes]) -> Outcome:
        msgs = [
            Incoming(v, parse_event(v, now_ms=NOW_MS).user_id.encode(), "events", 0, i, None)
            for i, v in enumerate(lines)
        ]
        return self.proc.process(msgs, self.serving, now_ms=NOW_MS)


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """`app` on uvicorn in a thread; its base URL."""
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _decider(
    bundle: Path, redis_url: str, prefix: str, rules: Path | None = None, **policy: Any
) -> Decider:
    settings = WorkerSettings(
        bundle=bundle, redis_url=redis_url, redis_prefix=prefix, device="cpu", variant="fp32",
        inference_threads=1, rules=rules,
    )  # type: ignore[arg-type]  # fmt: skip
    return Decider(settings, DecidePolicy(**policy), clock=lambda: NOW_MS / 1000)


@pytest.fixture(scope="module")
def user_lines(tiny_world: Path) -> dict[str, list[bytes]]:
    """The events of 6 labelled users (attackers, most alert) and 3 others, by user."""
    lines = tiny_world.joinpath("events.jsonl").read_bytes().splitlines()
    labels = [json.loads(x) for x in tiny_world.joinpath("labels.jsonl").read_text().splitlines()]
    by_user: dict[str, list[bytes]] = {}
    for v in lines:
        by_user.setdefault(parse_event(v, now_ms=NOW_MS).user_id, []).append(v)
    chosen = [u for u in dict.fromkeys(x["user_id"] for x in labels) if len(by_user[u]) >= 8][:6]
    chosen += [u for u in by_user if u not in chosen and len(by_user[u]) >= 8][:3]
    return {u: by_user[u] for u in chosen}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[KeyStore, str]:
    path = tmp_path / "keys"
    return KeyStore(path), add_key(path, "checkout")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_decide_equals_the_stream_and_never_counts_twice(
    tiny_bundle: Path, redis_url: str, redis_client: redis.Redis, key_prefix: str,
    user_lines: dict[str, list[bytes]], keys: tuple[KeyStore, str],
) -> None:  # fmt: skip
    store, key = keys
    api_prefix, ref_prefix = key_prefix + "api:", key_prefix + "ref:"
    stream = _Stream(tiny_bundle, redis_client, api_prefix)
    reference = _Stream(tiny_bundle, redis_client, ref_prefix)
    decider = _decider(tiny_bundle, redis_url, api_prefix, occlusion_top=3)
    decisions = set()
    with _serving(create_app(decider, store)) as url, httpx.Client(base_url=url) as http:
        for user, lines in user_lines.items():
            head, last = lines[:-1], lines[-1]
            stream.process(head)
            reference.process(head)
            ref = reference.process([last])  # the stream's own score of the last event
            want = {k: ref.scores[0][1][k] for k in ("fraud", "abnormal_click")}
            got = http.post("/v1/decide", content=last, headers=_auth(key)).json()
            assert got["fallback"] is None
            assert got["duplicate"] is False
            for head_name, score in want.items():
                assert abs(got["scores"][head_name] - score) <= 1e-4, (user, head_name)
            # the decision is the stream's alert: none → allow, else review or block
            alerted = {a["type"]: a["severity"] for _, a in ref.alerts}
            assert {h["head"]: h["severity"] for h in got["heads"]} == alerted
            want_decision = (
                "block" if "critical" in alerted.values() else "review" if alerted else "allow"
            )
            assert got["decision"] == want_decision
            assert got["model_version"] == reference.serving.model_version
            decisions.add(got["decision"])
            # API first, then the stream: the worker sees a duplicate, the window is unchanged
            window = stream.serving.store.get(user)
            later = stream.process([last])
            assert later.duplicates == 1
            assert stream.serving.store.get(user) == window
            assert window == reference.serving.store.get(user)
            eid = encode_event(parse_event(last, now_ms=NOW_MS), stream.serving.bundle.spec)[
                EID_SLICE
            ]
            stored = [window[i : i + RECORD_SIZE] for i in range(0, len(window), RECORD_SIZE)]
            assert sum(r[EID_SLICE] == eid for r in stored) == 1  # the event once, not twice
            # stream first (here: already stored), then the API: same scores, no second append
            again = http.post("/v1/score", content=last, headers=_auth(key)).json()
            assert again["duplicate"] is True
            assert again["scores"] == got["scores"]
            assert stream.serving.store.get(user) == window
    assert "allow" in decisions, decisions
    assert decisions - {"allow"}, decisions  # review or block seen too


def test_a_deny_list_hit_blocks_and_an_allow_listed_user_is_allowed(
    tiny_bundle: Path, redis_url: str, key_prefix: str, user_lines: dict[str, list[bytes]],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The lists of the worker's rules file (docs/lists.md) decide at checkout too."""
    users = list(user_lines)
    attackers, others = users[:6], users[6:]

    def last_decision(decider: Decider, user: str) -> dict[str, Any]:
        got: dict[str, Any] = {}
        for line in user_lines[user]:
            got = decider.decide(line, parse_event(line, now_ms=NOW_MS), NOW_MS)
        return got

    plain = _decider(tiny_bundle, redis_url, key_prefix + "plain:")
    alerted = [u for u in attackers if last_decision(plain, u)["heads"]]
    assert alerted, "no attacker alerts on its last event: nothing to allow-list"
    denied, allowed = others[0], alerted[0]
    (tmp_path / "lists.txt").write_text(
        f"deny user {denied} never test deny\nallow user {allowed} never test allow\n"
    )
    (tmp_path / "rules.yaml").write_text("rules: []\nlists: [lists.txt]\n")
    rules = tmp_path / "rules.yaml"
    decider = _decider(tiny_bundle, redis_url, key_prefix + "lists:", rules=rules)
    got = last_decision(decider, denied)
    assert got["decision"] == "block"
    assert any(h["source"] == "deny_list" for h in got["heads"])
    assert any(r["code"] == "deny_list" for r in got["reasons"])
    assert last_decision(decider, allowed)["decision"] == "allow"
    # with block_deny_list off, the deny hit is a review (its severity is not in block_at)
    soft = _decider(
        tiny_bundle, redis_url, key_prefix + "soft:", rules=rules, block_deny_list=False
    )
    assert last_decision(soft, denied)["decision"] == "review"


def test_decide_cuts_in_the_rules_file_decide_a_model_alert_by_its_score(
    tiny_bundle: Path, redis_url: str, key_prefix: str, user_lines: dict[str, list[bytes]],
    tmp_path: Path,
) -> None:  # fmt: skip
    """`decide: {head: {review, block}}` (stream.rules.DecideCuts): the same alert blocks, is a
    review or allows by its score; heads without cuts keep the severity policy."""

    def last(decider: Decider, user: str) -> dict[str, Any]:
        got: dict[str, Any] = {}
        for line in user_lines[user]:
            got = decider.decide(line, parse_event(line, now_ms=NOW_MS), NOW_MS)
        return got

    def with_rules(name: str, text: str) -> Decider:
        (tmp_path / f"{name}.yaml").write_text(text)
        return _decider(
            tiny_bundle, redis_url, f"{key_prefix}{name}:", rules=tmp_path / f"{name}.yaml"
        )

    plain = _decider(tiny_bundle, redis_url, key_prefix + "plain:")
    found = [(u, d) for u in list(user_lines)[:6] if (d := last(plain, u))["heads"]]
    assert found, "no attacker alerts on its last event"
    user, base = found[0]
    model_heads = [h for h in base["heads"] if h["source"] == "model"]
    assert model_heads, base["heads"]
    head, score = model_heads[0]["head"], model_heads[0]["score"]
    others = {h["head"] for h in base["heads"]} - {head}
    assert not others or base["decision"] != "allow"
    at = math.floor(score * 1e6) / 1e6  # at or under the score, written exactly
    block = with_rules("block", f"rules: []\ndecide:\n  {head}: {{block: {at:.6f}}}\n")
    assert last(block, user)["decision"] == "block"
    above = min(1.0, math.ceil(score * 1e6) / 1e6 + 1e-6)  # over the score
    allow = with_rules("allow", f"rules: []\ndecide:\n  {head}: {{review: {above:.6f}}}\n")
    got = last(allow, user)
    assert got["heads"] == base["heads"]  # the same alerts...
    if not others:  # ...and this head's, under its review cut, allows
        assert got["decision"] == "allow"
    review = with_rules("review", f"rules: []\ndecide:\n  {head}: {{review: 0.0, block: 1.0}}\n")
    decided = last(review, user)["decision"]
    assert decided in ("review", "block")
    if not others and score < 1.0:
        assert decided == "review"


def test_bad_input_is_422_naming_the_field_and_big_bodies_413(
    tiny_bundle: Path, redis_url: str, key_prefix: str, keys: tuple[KeyStore, str]
) -> None:
    store, key = keys
    decider = _decider(tiny_bundle, redis_url, key_prefix)
    good = {"event_id": "e1", "user_id": "u1", "ts": NOW_MS - 1000, "type": "login"}
    with _serving(create_app(decider, store)) as url, httpx.Client(base_url=url) as http:
        for body, field in (
            ({k: v for k, v in good.items() if k != "user_id"}, "user_id"),
            ({**good, "ts": "yesterday"}, "ts"),
            ({**good, "price": "cheap"}, "price"),
        ):
            resp = http.post("/v1/decide", json=body, headers=_auth(key))
            assert resp.status_code == 422, body
            assert resp.json()["field"] == field
            assert resp.json()["error"] == "invalid_event"
        resp = http.post("/v1/decide", content=b"{not json", headers=_auth(key))
        assert resp.status_code == 422
        assert resp.json()["field"]
        huge = json.dumps({**good, "text": "x" * 70_000}).encode()
        assert http.post("/v1/decide", content=huge, headers=_auth(key)).status_code == 413
        assert http.post("/v1/decide", json=good, headers=_auth(key)).status_code == 200
        assert http.get("/openapi.json").json()["paths"]["/v1/decide"]["post"]


def test_auth_refuses_without_a_key_and_rotates_without_restart(
    tiny_bundle: Path, redis_url: str, key_prefix: str, keys: tuple[KeyStore, str]
) -> None:
    store, key = keys
    decider = _decider(tiny_bundle, redis_url, key_prefix)
    event = {"event_id": "e1", "user_id": "u1", "ts": NOW_MS - 1000, "type": "login"}
    with _serving(create_app(decider, store)) as url, httpx.Client(base_url=url) as http:
        assert http.post("/v1/decide", json=event).status_code == 401
        assert http.post("/v1/decide", json=event, headers=_auth("wrong")).status_code == 401
        assert http.post("/v1/decide", json=event, headers={"X-API-Key": key}).status_code == 200
        assert key not in store.path.read_text()  # stored hashed only
        new = add_key(store.path, "checkout")  # rotation: a second key, then the old one goes
        assert http.post("/v1/decide", json=event, headers=_auth(new)).status_code == 200
        lines = store.path.read_text().splitlines()
        store.path.write_text("\n".join(lines[:-2] + lines[-1:]) + "\n")
        assert http.post("/v1/decide", json=event, headers=_auth(key)).status_code == 401
        assert http.post("/v1/decide", json=event, headers=_auth(new)).status_code == 200


def test_rate_limit_per_key(
    tiny_bundle: Path, redis_url: str, key_prefix: str, keys: tuple[KeyStore, str]
) -> None:
    store, key = keys
    decider = _decider(tiny_bundle, redis_url, key_prefix)
    event = {"event_id": "e1", "user_id": "u1", "ts": NOW_MS - 1000, "type": "login"}
    app = create_app(decider, store, rate_per_s=0.5, burst=2)
    with _serving(app) as url, httpx.Client(base_url=url) as http:
        codes = [
            http.post("/v1/decide", json=event, headers=_auth(key)).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]


@pytest.mark.parametrize("mode", ["refused", "silent"])
def test_redis_down_gives_the_fallback_within_the_timeout(
    tiny_bundle: Path, keys: tuple[KeyStore, str], mode: str
) -> None:
    # refused: nothing listens; silent: a socket that accepts and never answers (a hung Redis)
    store, key = keys
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1] if mode == "silent" else find_free_port()
        decider = _decider(
            tiny_bundle, f"redis://127.0.0.1:{port}/0", "rs:", timeout_s=0.2,
            on_redis_down="block",
        )  # fmt: skip
        event = {"event_id": "e1", "user_id": "u1", "ts": NOW_MS - 1000, "type": "checkout"}
        with _serving(create_app(decider, store)) as url, httpx.Client(base_url=url) as http:
            began = time.monotonic()
            got = http.post("/v1/decide", json=event, headers=_auth(key)).json()
            took = time.monotonic() - began
            assert got["decision"] == "block"
            assert got["fallback"] in ("redis_unavailable", "timeout")
            assert got["scores"] is None
            assert took < 1.5, took  # the deadline is 0.2 s; never the worker's 5 s timeout
            health = http.get("/health")
            assert health.status_code == 503
            assert health.json()["redis"] == "down"


def _close(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Equal answers but for the latency, scores within 1e-4 (a batch pads its windows
    together: the model's float sums differ in the last bits, as between the worker's batches)."""

    def rest(answer: dict[str, Any]) -> dict[str, Any]:
        skip = ("latency_ms", "scores", "heads")
        heads = [{k: v for k, v in h.items() if k != "score"} for h in answer["heads"]]
        return {**{k: v for k, v in answer.items() if k not in skip}, "heads": heads}

    def near(a: dict[str, float] | None, b: dict[str, float] | None) -> bool:
        if a is None or b is None:
            return a is b
        return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-4 for k in a)

    return (
        rest(got) == rest(want)
        and near(got["scores"], want["scores"])
        and near(
            {str(i): h["score"] for i, h in enumerate(got["heads"])},
            {str(i): h["score"] for i, h in enumerate(want["heads"])},
        )
    )


def test_a_batch_decides_as_each_call_alone(
    tiny_bundle: Path, redis_url: str, redis_client: redis.Redis, key_prefix: str,
    user_lines: dict[str, list[bytes]], keys: tuple[KeyStore, str],
) -> None:  # fmt: skip
    """Concurrent calls are decided in one batch (one script call, one model run): each answer
    equals that of the call alone, over the API too; a user's second event waits its turn."""
    store, key = keys
    users = list(user_lines)
    prefixes = [key_prefix + p for p in ("alone:", "batch:", "http:")]
    for prefix in prefixes:
        _Stream(tiny_bundle, redis_client, prefix).process(
            [line for u in users for line in user_lines[u][:-1]]
        )
    lasts = [(user_lines[u][-1], parse_event(user_lines[u][-1], now_ms=NOW_MS)) for u in users]
    alone = _decider(tiny_bundle, redis_url, prefixes[0])
    want = [alone.decide(body, event, NOW_MS) for body, event in lasts]
    assert {w["decision"] for w in want} - {"allow"}, want  # alerts among them, not only allows
    batched = _decider(tiny_bundle, redis_url, prefixes[1])
    got = batched.decide_batch(lasts, NOW_MS)
    assert len(got) == len(want)
    assert all(isinstance(g, dict) and _close(g, w) for g, w in zip(got, want, strict=True))
    again = batched.decide_batch(lasts, NOW_MS)  # each a duplicate now: same scores
    for g, w in zip(again, want, strict=True):
        assert isinstance(g, dict)
        assert g["duplicate"]
        assert _close(g, {**w, "duplicate": True})
    with pytest.raises(ValueError, match="one event per user"):
        batched.decide_batch([lasts[0], lasts[0]], NOW_MS)
    # over HTTP: all at once, a batch waiting 50 ms to fill; the first user twice (a duplicate)
    served = _decider(tiny_bundle, redis_url, prefixes[2], timeout_s=10.0)  # no deadline here
    app = create_app(served, store, batch_wait_s=0.05, max_in_flight=64)
    bodies = [body for body, _ in lasts] + [lasts[0][0]]
    answers: list[dict[str, Any]] = [{} for _ in bodies]
    with _serving(app) as url, httpx.Client(base_url=url) as http:

        def call(i: int) -> None:
            answers[i] = http.post("/v1/decide", content=bodies[i], headers=_auth(key)).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    first, repeat = answers[0], answers[-1]
    assert sorted([first["duplicate"], repeat["duplicate"]]) == [False, True]
    assert _close(repeat if first["duplicate"] else first, want[0])
    assert _close(first if first["duplicate"] else repeat, {**want[0], "duplicate": True})
    for a, w in zip(answers[1:-1], want[1:], strict=True):
        assert _close(a, w)
    window = RedisWindowStore(redis_client, alone.slot.current.policy, prefix=prefixes[2]).get(
        users[0]
    )
    eid = encode_event(lasts[0][1], alone.slot.current.bundle.spec)[EID_SLICE]
    stored = [window[i : i + RECORD_SIZE] for i in range(0, len(window), RECORD_SIZE)]
    assert sum(r[EID_SLICE] == eid for r in stored) == 1


def test_serve_with_two_workers_answers_from_both(
    tiny_bundle: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """`decide serve --workers 2`: uvicorn's workers on one port, each building its own app
    from the flags; bad --http/--loop values are one line, before anything starts."""
    import os
    import subprocess
    import sys

    keys_path = tmp_path / "keys"
    key = add_key(keys_path, "checkout")
    env = {**os.environ, "RISKSTREAM_REDIS_URL": redis_url, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "riskstream", "decide", "serve", "--bundle", str(tiny_bundle),
            "--keys-file", str(keys_path), "--redis-prefix", key_prefix]  # fmt: skip
    bad = subprocess.run([*base, "--http", "h3"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "--http" in bad.stderr
    assert "Traceback" not in bad.stderr
    port = find_free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:  # a file, not a pipe: a full pipe would stall the service
        proc = subprocess.Popen(
            [*base, "--port", str(port), "--workers", "2"], env=env,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        pids: set[int] = set()
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                event = {"event_id": f"e{len(pids)}", "user_id": "u1",
                         "ts": int(time.time() * 1000) - 1000, "type": "login"}  # fmt: skip
                # a new connection each time: the kernel hands them to either worker
                resp = httpx.post(f"{url}/v1/decide", json=event, headers=_auth(key))
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            assert resp.status_code == 200, resp.text
            assert resp.json()["decision"] in ("allow", "review", "block")
            pids.add(httpx.get(f"{url}/health").json()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, pids
    finally:
        proc.terminate()
        proc.wait(30)


def test_past_max_in_flight_a_call_gets_the_overloaded_fallback_at_once(
    tiny_bundle: Path, redis_url: str, key_prefix: str, keys: tuple[KeyStore, str]
) -> None:
    """One decision under way (held 0.8 s by the batch wait) and `max_in_flight` 1: calls that
    arrive meanwhile are answered at once with the fallback decision, marked `overloaded`,
    instead of queueing; the call under way is decided normally."""
    store, key = keys
    # a deadline past the batch wait: the call under way is not given up (a call given up no
    # longer counts as under way)
    decider = _decider(tiny_bundle, redis_url, key_prefix, on_redis_down="review", timeout_s=3.0)
    app = create_app(decider, store, max_in_flight=1, batch_wait_s=0.8)
    events = [{"event_id": f"e{i}", "user_id": f"u{i}", "ts": NOW_MS - 1000, "type": "login"}
              for i in range(3)]  # fmt: skip
    answers: dict[int, tuple[dict[str, Any], float]] = {}

    def call(i: int, http: httpx.Client) -> None:
        began = time.monotonic()
        got = http.post("/v1/decide", json=events[i], headers=_auth(key)).json()
        answers[i] = (got, time.monotonic() - began)

    with (
        _serving(app) as url,
        httpx.Client(base_url=url) as first,
        httpx.Client(base_url=url) as other,
    ):
        held = threading.Thread(target=call, args=(0, first))
        held.start()
        time.sleep(0.3)  # the first call is waiting out its batch
        call(1, other)
        call(2, other)
        held.join(10)
        metrics = other.get("/metrics").text
    for i in (1, 2):
        got, took = answers[i]
        assert got["fallback"] == "overloaded"
        assert got["decision"] == "review"  # the configured fallback decision
        assert got["scores"] is None
        assert took < 0.5, took  # at once, not after the call under way
    got, took = answers[0]
    assert got["fallback"] is None
    assert got["scores"] is not None
    assert took >= 0.8
    assert decider.fallbacks == {"overloaded": 2}
    assert 'decide_requests_total{endpoint="decide"' in metrics


def test_a_new_bundle_is_served_through_the_api_and_a_broken_one_refused(
    tiny_bundle: Path, tiny_model: Path, redis_url: str, key_prefix: str,
    keys: tuple[KeyStore, str], tmp_path: Path,
) -> None:  # fmt: skip
    """The service's model slot is the worker's: a bundle swapped into its folder is verified
    and served by the next call (its `model_version` in the answer and /health); one whose
    manifest was damaged is refused, and the one before keeps answering."""
    import shutil

    from export.build import ExportOptions, export
    from export.install import swap_in

    served = tmp_path / "served"
    shutil.copytree(tiny_bundle, served)
    before = json.loads((served / "manifest.json").read_text())["model_version"]
    time.sleep(1.1)  # model_version carries the export's second: the next one differs
    export(tiny_model, tmp_path / "new", ExportOptions(windows=1000, progress=False))
    after = json.loads((tmp_path / "new" / "manifest.json").read_text())["model_version"]
    assert after != before
    store, key = keys
    decider = _decider(served, redis_url, key_prefix, reload_poll_s=0.0)
    event = {"user_id": "u1", "ts": NOW_MS - 1000, "type": "login"}
    with _serving(create_app(decider, store)) as url, httpx.Client(base_url=url) as http:

        def version(i: int) -> str:
            got = http.post("/v1/decide", json={**event, "event_id": f"e{i}"}, headers=_auth(key))
            assert got.status_code == 200, got.text
            assert got.json()["fallback"] is None
            return str(got.json()["model_version"])

        assert version(0) == before
        swap_in(tmp_path / "new", served)
        assert version(1) == after
        assert http.get("/health").json()["model_version"] == after
        assert http.get("/health").json()["model_reloads"] == 1
        damaged = tmp_path / "damaged"
        shutil.copytree(tiny_bundle, damaged)
        manifest = json.loads((damaged / "manifest.json").read_text())
        manifest["model_version"] = "edited"  # the manifest's own sha256 no longer matches
        (damaged / "manifest.json").write_text(json.dumps(manifest))
        swap_in(damaged, served)
        assert version(2) == after  # refused: the bundle before still answers
        health = http.get("/health").json()
        assert health["model_refused"] == 1
        assert health["model_version"] == after
