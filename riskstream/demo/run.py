"""The demo's steps: simulate → train (tiny) → export → stack up → worker → replay the held-out
part → collect alerts → scorecard and timeline → stop what it started.

The worker runs with a shadow (`worker --shadow-bundle`, docs/rollout.md): the same checkpoint
exported a second time, FP32 only, beside the live bundle (FP32 + INT8, served as INT8 on a CPU).
Nothing new is trained; the shadow's would-be alerts (`alerts.shadow`) are kept in
`shadow_alerts.jsonl` and compared with the live ones (`riskstream shadow report`'s table): what
serving the model unquantised would change. `demo --review` shows that comparison again, and
on the console's Precision page once analysts decide.

Every step prints a rule and its progress; a failure names its step (`DemoError`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from events import parse_ts_ms
from riskstream.demo.exceptions import DemoError
from riskstream.demo.summary import FEW_TO_LEARN, Scorecard, score_alerts
from riskstream.demo.timeline import write_timeline
from riskstream.localstack import find_free_port
from stream.prometheus import histogram_quantile, metric_total, scrape

__all__ = [
    "DemoError",
    "DemoResult",
    "expectations",
    "render",
    "reusable_alerts",
    "reusable_shadow_alerts",
    "run_demo",
    "shadow_summary",
    "step_header",
]

_out = Console()
STEPS: Final = 8
_WORKER_WAIT_S: Final = 240.0
#: What a finished run was asked for, beside its bundle and alerts (`demo --review` reuses them).
RUN_FILE: Final = "demo.json"
#: The shadow's would-be alerts of the run (`alerts.shadow`), beside `alerts.jsonl`.
SHADOW_FILE: Final = "shadow_alerts.jsonl"
#: Measured on the default demo (2,000 users, 2 days, seed 7; see README): what a normal run shows.
EXPECTED_CAUGHT: Final = "about 21 of 27, every kind at least once"
EXPECTED_FALSE: Final = "3 of 1,113 in that run"


@dataclass
class DemoResult:
    """What the demo measured."""

    card: Scorecard
    events: int
    dead_letters: int
    events_per_s: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    alerts: list[dict[str, Any]]
    out: Path
    held_back: int = 0  # model scores over the threshold on windows too short to alert
    shadow_alerts: list[dict[str, Any]] | None = None  # the FP32 shadow's would-be alerts


def step_header(console: Console, n: int, title: str) -> None:
    """A rule with the step's title in it; a title too long for the terminal goes on a line of
    its own, wrapped (a rule would cut it with an ellipsis)."""
    text = f"{n}/{STEPS} {title}"
    if cell_len(text) + 6 <= console.width:
        console.rule(Text(text, style="bold"))
    else:
        console.rule()
        console.print(Text(text, style="bold"))


@contextlib.contextmanager
def _step(n: int, title: str) -> Iterator[None]:
    step_header(_out, n, title)
    try:
        yield
    except DemoError:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        raise DemoError(f"step {n}/{STEPS} ({title}) failed: {exc}") from exc


def _auc(value: float | None) -> str:
    """A PR-AUC for the terminal; None where the set had one class only (a small world's
    check users may hold no attack of a head).

    >>> _auc(0.91234), _auc(None)
    ('0.912', 'undefined (no attack among the check users)')
    """
    return "undefined (no attack among the check users)" if value is None else f"{value:.3f}"


def _split_history(world: Path, history: Path, live: Path) -> tuple[int, int]:
    """The world's events before its median time (the history `train` is given) and from it
    on (the live part replayed, never trained on), each in file order: (cut ms, live events)."""
    lines = world.joinpath("events.jsonl").read_bytes().splitlines()
    times = [parse_ts_ms(orjson.loads(line)["ts"]) for line in lines]
    cut = sorted(times)[(len(times) - 1) // 2]
    history.write_bytes(b"".join(x + b"\n" for x, t in zip(lines, times, strict=True) if t < cut))
    kept = [x for x, t in zip(lines, times, strict=True) if t >= cut]
    live.write_bytes(b"".join(x + b"\n" for x in kept))
    return cut, len(kept)


def reusable_alerts(
    out: Path, *, users: int, days: float, seed: int, attack_share: float = 0.02
) -> list[dict[str, Any]] | None:
    """The alerts of a finished demo run in `out` with these settings whose bundle is still
    there, or None (no run, another world, a run cut short, a file gone or unreadable)."""
    try:
        run = orjson.loads((out / RUN_FILE).read_bytes())
        wanted = {"users": users, "days": days, "seed": seed, "attack_share": attack_share}
        if any(run.get(k) != v for k, v in wanted.items()) or run.get("quick"):
            return None
        if not (out / "bundle" / "manifest.json").is_file():
            return None
        lines = (out / "alerts.jsonl").read_bytes().splitlines()
        alerts = [orjson.loads(line) for line in lines if line.strip()]
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    return alerts if len(alerts) == run.get("alerts") else None


def reusable_shadow_alerts(out: Path) -> list[dict[str, Any]] | None:
    """The shadow's would-be alerts of the finished run in `out`, or None (a run from before
    the demo had a shadow, or the file is gone or cut short)."""
    try:
        run = orjson.loads((out / RUN_FILE).read_bytes())
        lines = (out / SHADOW_FILE).read_bytes().splitlines()
        alerts = [orjson.loads(line) for line in lines if line.strip()]
    except (OSError, orjson.JSONDecodeError):
        return None
    wanted = run.get("shadow_alerts") if isinstance(run, dict) else None
    return alerts if wanted == len(alerts) else None


def shadow_summary(
    console: Console, live: list[dict[str, Any]], shadow: list[dict[str, Any]]
) -> None:
    """`riskstream shadow report`'s table on the run's live and shadow alerts (no analysts'
    decisions yet: precision shows once they decide, on the console's Precision page)."""
    from riskstream.tools.shadow import compare, report_table

    times = [parse_ts_ms(a["detected_at"]) for a in [*live, *shadow] if "detected_at" in a]
    table = report_table(compare(live, shadow, None, min(times, default=0)))
    # Not a terminal (a file, a pipe): wide enough for the whole table, as `shadow report`.
    console.print(table, width=None if console.is_terminal else 160)
    console.print(
        "the shadow is the same model exported FP32 only, the live bundle serves INT8: pairs "
        "only one alerted are what quantisation changes (docs/rollout.md)",
        soft_wrap=True,
    )


def run_demo(
    out: Path,
    *,
    users: int = 2000,
    days: float = 2.0,
    seed: int = 7,
    attack_share: float = 0.02,
    quick: bool = False,
    replay_rate: float | None = 2000.0,
    shadow_model: bool = True,
) -> DemoResult:
    """Run every step; returns the scorecard (also printed), leaves files in `out`. With
    `shadow_model`, the worker runs the model exported FP32 only as its shadow."""
    from riskstream.dev import dev_down, dev_up
    from simulator import CLASSIC_KINDS, WorldConfig, simulate_world

    world, model, bundle = out / "world", out / "model", out / "bundle"
    shadow_bundle = out / "shadow-bundle"
    (out / RUN_FILE).unlink(missing_ok=True)  # a run cut short leaves no claim to be whole
    with _step(1, "simulate a labelled world"):
        summary = simulate_world(
            # The classic kinds: the hard ones (session takeover, click injection, …) need
            # more data and time than the demo's quick model gets (`riskstream bench quality`).
            WorldConfig(
                users=users,
                days=days,
                seed=seed,
                attack_share=attack_share,
                attack_kinds=frozenset(CLASSIC_KINDS),
            ),
            world,
            progress=True,
        )
        _out.print(f"{summary.events:,} events, {sum(summary.episodes_per_kind.values())} "
                   f"attack episodes → {world}")  # fmt: skip
    with _step(2, "pretrain and fine-tune the tiny BERT on the first half of the world"):
        from training.config import TrainConfig
        from training.train import train

        # `train` learns from every event it is given: the second half is held back here,
        # and replayed live below.
        held_out = out / "held_out.jsonl"
        t_cut, count = _split_history(world, out / "history.jsonl", held_out)

        overrides: dict[str, Any] = (
            {"pretrain_windows": 3000, "finetune_epochs": 2} if quick else {}
        )
        # force: a world this small may leave a head without positives in the validation
        # split (the default one does, for fraud), which `train` refuses; the demo goes on
        # with its warning, and the summary says what that means.
        report = train(out / "history.jsonl", world / "labels.jsonl", model,
                       TrainConfig.for_preset("tiny", **overrides),
                       feedback=world / "feedback.jsonl", force=True)  # fmt: skip
        _out.print("PR-AUC on the check users: " + ", ".join(
            f"{h} {_auc(m['pr_auc'])} (GBDT {_auc(report['baseline'][h]['pr_auc'])})"
            for h, m in report["heads"].items()))  # fmt: skip
    title = "export a verified ONNX bundle (FP32 + INT8)"
    with _step(3, title + (", and FP32 only as its shadow" if shadow_model else "")):
        from export.build import ExportOptions, export

        options = ExportOptions(int8=True, force=True, windows=1000 if quick else 2048)
        manifest = export(model, bundle, options)
        _out.print(f"bundle {bundle}: model {manifest.model_version}")
        shadow_version = None
        if shadow_model:
            # The shadow: the same checkpoint again, without INT8 (nothing trained); 1,000
            # parity windows, the fewest export takes, so the step grows by seconds only.
            shadow = export(model, shadow_bundle, ExportOptions(force=True, windows=1000))
            shadow_version = shadow.model_version
            _out.print(f"shadow bundle {shadow_bundle}: model {shadow_version} (FP32)")
    state = out / "stack.json"
    worker: subprocess.Popen[bytes] | None = None
    try:
        with _step(4, "start the local stack (Tansu broker, Redis)"):
            up = dev_up(state, broker_port=19092, redis_port=16379, review=False)
            broker, redis_ = up.state.broker, up.state.redis
            if broker is None or redis_ is None:
                raise DemoError(f"step 4/{STEPS}: the stack did not record a broker and Redis")
            actions = ", ".join(f"{k} {v}" for k, v in up.actions.items())
            _out.print(f"broker {broker.url}, Redis {redis_.url} ({actions})")
        with _step(5, "start the stream worker" + (" (and its shadow)" if shadow_model else "")):
            port = find_free_port()
            env = {**os.environ, "RISKSTREAM_REDIS_PREFIX": f"rsdemo:{uuid.uuid4().hex[:8]}:",
                   "RISKSTREAM_BROKER_SESSION_TIMEOUT_S": "6",
                   "RISKSTREAM_FAUST_DATADIR": str(out / "faust")}  # fmt: skip
            log = (out / "worker.log").open("wb")
            shadow_args = ["--shadow-bundle", str(shadow_bundle)] if shadow_model else []
            worker = subprocess.Popen(
                [sys.executable, "-m", "riskstream", "worker", "--processes", "1",
                 "--bundle", str(bundle), *shadow_args, "--broker", broker.url,
                 "--redis", redis_.url,
                 "--metrics-port", str(port),
                 "--group", f"demo-{uuid.uuid4().hex[:8]}", "--log-level", "warn"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()  # the worker holds its own descriptor
            deadline = time.monotonic() + 60
            while True:
                if worker.poll() is not None:
                    raise DemoError(f"step 5/{STEPS}: the worker exited ({out / 'worker.log'})")
                with contextlib.suppress(OSError):
                    scrape(port)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no /metrics after 60 s ({out / 'worker.log'})")
                time.sleep(0.3)
            _out.print(f"worker pid {worker.pid}, metrics http://127.0.0.1:{port}/metrics")
        with _step(6, "replay the held-out part of the world into Kafka"):
            from riskstream.tools.replay import replay_file

            began = time.perf_counter()
            # Paced below the worker's capacity (~4,000 events/s here), so latency is the
            # pipeline's, not a backlog's.
            sent = replay_file(held_out, broker.bootstrap, rate=replay_rate, progress=True)
            _out.print(f"{sent.sent:,} events sent in {sent.wall_s:.1f} s "
                       f"({sent.sent / max(sent.wall_s, 1e-9):,.0f} events/s)")  # fmt: skip
        with _step(7, "wait for the worker, collect the alerts"):
            deadline = time.monotonic() + _WORKER_WAIT_S
            text = ""
            while time.monotonic() < deadline:
                text = scrape(port)
                if metric_total(text, "events_total") >= count:
                    break
                time.sleep(0.25)
            else:
                raise TimeoutError(f"the worker processed {metric_total(text, 'events_total'):.0f} "
                                   f"of {count} events in {_WORKER_WAIT_S:.0f} s")  # fmt: skip
            wall = time.perf_counter() - began
            from riskstream.tools.alerts import read_alerts

            alerts = read_alerts(broker.bootstrap, timeout_s=30)
            # The shadow judges a batch after its live alerts are out: read its topic once
            # the worker has counted every would-be alert it published.
            shadow_alerts: list[dict[str, Any]] | None = None
            if shadow_model:
                wanted = metric_total(scrape(port), "shadow_alerts_total")
                shadow_alerts = read_alerts(broker.bootstrap, "alerts.shadow", timeout_s=30)
                if len(shadow_alerts) < wanted:
                    time.sleep(1.0)
                    shadow_alerts = read_alerts(broker.bootstrap, "alerts.shadow", timeout_s=30)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=30)
            if worker.poll() is None:
                worker.kill()
        with contextlib.suppress(Exception):
            dev_down(state)
    with _step(8, "score the alerts against the episodes"):
        card = score_alerts(alerts, held_out, world / "labels.jsonl", t_cut)
        write_timeline(held_out, alerts, world / "labels.jsonl", t_cut, out / "timeline.png")
        (out / "alerts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
        (out / SHADOW_FILE).unlink(missing_ok=True)
        if shadow_alerts is not None:
            (out / SHADOW_FILE).write_bytes(
                b"".join(orjson.dumps(a) + b"\n" for a in shadow_alerts)
            )
        n_shadow = len(shadow_alerts) if shadow_alerts is not None else None
        run = {"users": users, "days": days, "seed": seed, "attack_share": attack_share,
               "quick": quick, "model_version": manifest.model_version,
               "alerts": len(alerts), "shadow_model_version": shadow_version,
               "shadow_alerts": n_shadow}  # fmt: skip
        (out / RUN_FILE).write_bytes(orjson.dumps(run) + b"\n")  # written last: a whole run
    result = DemoResult(
        card=card,
        events=count,
        dead_letters=int(metric_total(text, "dlq_total")),
        events_per_s=count / wall,
        latency_p50_s=histogram_quantile(text, "event_to_alert_seconds", 0.5),
        latency_p99_s=histogram_quantile(text, "event_to_alert_seconds", 0.99),
        alerts=alerts,
        out=out,
        held_back=int(metric_total(text, "short_window_suppressed_total")),
        shadow_alerts=shadow_alerts,
    )
    render(result)
    return result


def render(result: DemoResult) -> None:
    """The summary table."""
    from rich.table import Table

    card = result.card
    table = Table(title=f"riskstream demo — {result.out}", show_header=False)
    table.add_column("what", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    caught, total = card.episodes
    p50 = f"≤ {result.latency_p50_s * 1000:.0f} ms" if result.latency_p50_s else "–"
    p99 = f"≤ {result.latency_p99_s * 1000:.0f} ms" if result.latency_p99_s else "–"
    rows = [
        ("events replayed (held-out part)", f"{result.events:,}"),
        ("rate (replay start → last event processed)", f"{result.events_per_s:,.0f} events/s"),
        ("alerts", ", ".join(f"{k} {v}" for k, v in sorted(card.alerts_by_type.items())) or "0"),
        ("attack episodes caught", f"{caught} / {total}"),
        *(
            (f"  {kind}", f"{c} / {t}  ({card.learnt_from.get(kind, 0)} before the cut)")
            for kind, (c, t) in card.caught_by_kind.items()
        ),
        ("normal users falsely alerted", f"{card.normal_users_alerted} of {card.normal_users:,}"),
        ("scores held back: window too short", f"{result.held_back:,} (docs/alerts.md)"),
        ("event → alert latency p50 / p99", f"{p50} / {p99}"),
        ("dead letters", f"{result.dead_letters}"),
        (
            "files",
            f"{result.out}/timeline.png, alerts.jsonl, "
            + ("shadow_alerts.jsonl, " if result.shadow_alerts is not None else "")
            + "worker.log",
        ),
    ]
    for what, value in rows:
        table.add_row(what, value)
    _out.print(table)
    _out.print(expectations(result), soft_wrap=False)
    if result.shadow_alerts is not None:
        _out.rule("[bold]the shadow beside the live model (riskstream shadow report)")
        shadow_summary(_out, result.alerts, result.shadow_alerts)


def expectations(result: DemoResult) -> str:
    """What a normal run shows, so that a broken one stands out."""
    card = result.card
    rare = card.rare_kinds
    caught, total = card.episodes
    share = caught / total if total else 0.0
    lines = [
        "What to expect: the demo trains the tiny model for about a minute on the first day "
        "of a small world, a smoke test of the whole path rather than a measure of quality. A "
        f"normal run of the default demo catches most attack episodes ({EXPECTED_CAUGHT}) "
        f"and alerts under 1 % of the normal users ({EXPECTED_FALSE}).",
        f"A kind with fewer than {FEW_TO_LEARN} episodes before the test cut (the part the "
        "model learns from) is too rare to learn here and may be missed"
        + (f": in this run {', '.join(rare)}." if rare else "; this run has none."),
    ]
    if result.alerts and all(a.get("severity") == "medium" for a in result.alerts):
        lines.append(
            "Every alert is `medium`: a world this small gives too few validation alerts to "
            "measure which scores are reliably right (docs/alerts.md, Severity)."
        )
    if total and share < 0.4:
        lines.append(
            f"Only {caught} of {total} episodes caught: far below a normal run. Look at "
            "worker.log and at the test PR-AUC of step 2."
        )
    if card.normal_users and card.normal_users_alerted > 0.03 * card.normal_users:
        lines.append(
            f"{card.normal_users_alerted} normal users alerted: more than a normal run's few."
        )
    return "\n".join(lines)
