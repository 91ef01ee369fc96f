"""The pipeline benchmark's files: `pipeline.json`, `pipeline.md` and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

import numpy as np

from riskstream.bench.pipeline.profile import PARTS, ROLES
from stream.prometheus import bucket_quantile

__all__ = [
    "capacity_of",
    "ceiling_model",
    "ceiling_of",
    "host_run",
    "mode_of",
    "quantile_ms",
    "render_markdown",
    "targets",
    "write_report",
]

TARGET_EVENTS_PER_S: Final = 5_000
TARGET_P99_MS: Final = 250.0  # at 75 % of capacity
TARGET_P99_50_MS: Final = 150.0  # at 50 %
TARGET_SHARE: Final = 0.75
_PLOTS: Final = ("throughput_vs_load.png", "latency_cdf.png", "lag.png", "cost.png")


def quantile_ms(sorted_ms: list[float], q: float) -> float | None:
    """The q-quantile of sorted values (nearest rank), None when there are none.

    >>> quantile_ms([1.0, 2.0, 3.0, 4.0], 0.5), quantile_ms([], 0.99)
    (2.0, None)
    """
    if not sorted_ms:
        return None
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def mode_of(run: dict[str, Any]) -> str:
    """shared or isolated (runs written before the isolated mode: shared)."""
    return str(run.get("mode", "shared"))


def capacity_of(run: dict[str, Any]) -> tuple[float | None, str]:
    """The run's sustained capacity and its name; runs without a search: the drained rate."""
    if "capacity" in run:
        return run["capacity"]["capacity_per_s"], "sustained"
    return float(run["pipeline"]["events_per_s"]), "drained"


def host_run(r: dict[str, Any]) -> dict[str, Any]:
    """The host's figures: the isolated run with the most worker processes, else the shared."""
    isolated = [run for run in r["runs"] if mode_of(run) == "isolated"]
    return max(isolated or r["runs"], key=lambda run: run["processes"])


def ceiling_of(r: dict[str, Any], run: dict[str, Any]) -> float:
    """min(model only, transport only) for `run`'s mode and process count. Model: in isolated
    mode on the worker's cores alone; else per host when the run has more than one process
    and that was measured."""
    return float(min(ceiling_model(r, run), run["transport"]["events_per_s"]))


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 30's targets (per host: the isolated run with the most processes when there is
    one), each with the measured figure and whether it is met."""
    run = host_run(r)
    cap, name = capacity_of(run)
    ceiling = ceiling_of(r, run)
    by_pct = {lv["percent"]: lv for lv in run["levels"]}
    where = f"{mode_of(run)}, {run['processes']} proc."
    rows = [
        {"target": f"≥ {TARGET_EVENTS_PER_S:,} events/s {name} per host ({where})",
         "measured": "not found" if cap is None else f"{cap:,.0f} events/s",
         "met": cap is not None and cap >= TARGET_EVENTS_PER_S},
    ]  # fmt: skip
    for pct, goal in ((75, TARGET_P99_MS), (50, TARGET_P99_50_MS)):
        level = by_pct.get(pct)
        p99 = quantile_ms(level["alert_latencies_ms"], 0.99) if level else None
        rows.append({"target": f"p99 event→alert ≤ {goal:.0f} ms at {pct} % of capacity",
                     "measured": "no alerts" if p99 is None else f"{p99:,.0f} ms",
                     "met": p99 is not None and p99 <= goal})  # fmt: skip
    share = (cap or 0.0) / ceiling
    rows += [
        {"target": f"{name} ≥ {TARGET_SHARE:.0%} of min(model, transport), per host",
         "measured": f"{share:.0%} of {ceiling:,.0f}/s", "met": share >= TARGET_SHARE},
        {"target": "one Redis round trip per batch", "measured": "1 EVALSHA per batch "
         "(+1 EXISTS pipeline when a score passes a threshold, +1 SET after alerts)",
         "met": True},
    ]  # fmt: skip
    return rows


def _cores(cores: dict[str, list[int] | None] | None) -> str:
    """'worker 0 [1], broker [0], …' (the cores each process may run on)."""
    if not cores:
        return "–"
    return ", ".join(f"{n} " + ("not pinned" if c is None else f"[{','.join(map(str, c))}]")
                     for n, c in cores.items())  # fmt: skip


def _capacity_section(r: dict[str, Any]) -> list[str]:
    """Sustained capacity per mode and process count, its probes, and its share of the
    ceilings measured in the same run."""
    runs = [run for run in r["runs"] if "capacity" in run]
    if not runs:
        return []
    rule = runs[0]["capacity"]["rule"]
    span = runs[0]["capacity"]["span_s"]
    out = ["", "## Sustained capacity (open loop, bounded lag)", "",
           f"Each probe offers a rate for {span:g} s on a fresh worker; bounded: the consumer lag "
           f"at the end ≤ {rule['max_lag_s']:g} s of the offered rate and not growing over the "
           f"second half (slope ≤ {rule['max_growth']:.0%} of the offered rate, or the lag "
           f"there ≤ {rule['noise_s']:g} s of it), with at least "
           f"{rule.get('min_offered', 0.95):.0%} of the rate really offered (the load generator "
           "shares the host). The search starts at the drained rate, steps "
           "up while bounded, then bisects. Capacity: the highest bounded rate (≥: the load "
           "generator could not offer more, a lower bound).", "",
           "| mode | processes | drained /s | **sustained** /s | sustained / drained | "
           "model only /s | transport only /s | sustained / min(model, transport) | "
           "probes: offered /s → verdict (end lag, p99 ms) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for run in runs:
        cap = run["capacity"]["capacity_per_s"]
        drained = run["pipeline"]["events_per_s"]
        model = ceiling_model(r, run)
        probes = "; ".join(
            f"{_n(p['offered_per_s'])} → {'ok' if p['bounded'] else 'unbounded'} "
            f"({_n(p['end_lag'])}, {_n(p['latency_p99_ms'])})"
            for p in run["capacity"]["probes"])  # fmt: skip
        out.append(_row([mode_of(run), run["processes"], _n(drained),
                         ("≥ " if run["capacity"].get("load_limited") else "")
                         + (f"**{_n(cap)}**" if cap is not None else "**not found**"),
                         "–" if cap is None else f"{cap / drained:.0%}", _n(model),
                         _n(run["transport"]["events_per_s"]),
                         "–" if cap is None else f"{cap / ceiling_of(r, run):.0%}",
                         probes]))  # fmt: skip
    out += ["", "Cores each process may run on (as the OS reported them after pinning):", ""]
    out += [f"- {mode_of(run)}, {run['processes']} proc.: {_cores(run.get('cores'))}"
            for run in runs]  # fmt: skip
    return out


def ceiling_model(r: dict[str, Any], run: dict[str, Any]) -> float:
    """The model-only figure `ceiling_of` compares `run` with."""
    if mode_of(run) == "isolated" and "model_isolated" in r:
        return float(r["model_isolated"]["windows_per_s"])
    if run["processes"] > 1 and "model_host" in r:
        return float(r["model_host"]["windows_per_s"])
    return float(r["model"]["windows_per_s"])


def _cpu(cpu: dict[str, float]) -> str:
    """'worker 0 0.95, worker 1 0.93, broker 0.20, …' (cores busy)."""
    return ", ".join(f"{name} {cores:.2f}" for name, cores in cpu.items()) or "–"


def _loads(avg: list[float] | None) -> str:
    return "–" if not avg else " ".join(f"{x:.2f}" for x in avg)


def _ms(seconds: float | None) -> str:
    return _n(None if seconds is None else seconds * 1000)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _parse_rows(r: dict[str, Any]) -> list[str]:
    pe = r.get("parse_encode")
    if not pe:
        return []
    return [
        _row(["parse + encode only (the worker's per-event path)",
              _n(pe["parse_encode_per_event"]), "", "", ""]),
        _row(["… JSON alone: orjson per message / one orjson call per batch",
              f"{_n(pe['json_per_event'])} / {_n(pe['json_per_batch'])}", "", "", ""]),
        _row(["… records: struct per event / one numpy conversion per batch",
              f"{_n(pe['pack_per_event'])} / {_n(pe['pack_numpy_batch'])}", "", "", ""]),
    ]  # fmt: skip


def _profile_spans(r: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
    """(processes, span, its drain or level) for every span py-spy sampled."""
    spans = []
    for run in r["runs"]:
        if run["pipeline"].get("profile"):
            spans.append((run["processes"], "drain", run["pipeline"]))
        spans += [(run["processes"], f"{lv['percent']} % load", lv)
                  for lv in run["levels"] if lv.get("profile")]  # fmt: skip
    return spans


def _profile_section(r: dict[str, Any]) -> list[str]:
    """How busy each worker's threads were and on what (py-spy), beside the process's CPU."""
    spans = _profile_spans(r)
    if not spans:
        return []
    parts = [p for p in PARTS if p != "idle"]
    roles = [x for x in ROLES if x != "other"]
    out = ["", "## Where the time goes (py-spy, `--profile`)", "",
           "Shares of wall time from py-spy's samples of every thread (1.00 = one thread busy "
           "the whole span): how busy the event loop (Faust's stream path), Faust's consumer "
           "thread (aiokafka's fetches) and the batch thread (parse, Redis, the model) were, and "
           "what the busy samples were doing (`events/`: parsing, encoding, window aggregates "
           "and model inputs). A thread waiting for a core or the interpreter "
           "lock is sampled where it waits: busy threads adding up to more than the process's "
           "CPU means waiting. Folded stacks: `profiles/`.", "",
           "| processes | span | process | CPU (cores) | busy: " + " / ".join(roles) + " | "
           + " | ".join(parts) + " | py-spy (cores) |",
           "|---:|---|---|---:|---:|" + "---:|" * len(parts) + "---:|"]  # fmt: skip
    for processes, span, item in spans:
        prof = item["profile"]
        for name, summary in prof["processes"].items():
            busy, shares = summary["busy"], summary["parts"]
            out.append(_row([processes, span, name, _n(item.get("cpu", {}).get(name), 2),
                             " / ".join(f"{busy[x]:.2f}" for x in roles),
                             *(f"{shares[p]:.2f}" for p in parts),
                             _n(prof.get("py_spy_cores"), 2)]))  # fmt: skip
    most = max(s[0] for s in spans)
    processes, span, item = [s for s in spans if s[0] == most][-1]  # its last load level
    for name, summary in item["profile"]["processes"].items():
        out += ["", f"Innermost frames with the most samples, {processes} processes, {span}, "
                f"{name}:", "", "| frame | part | share |", "|---|---|---:|"]  # fmt: skip
        out += [_row([f"`{frame}`", part, f"{share:.2f}"]) for frame, part, share in summary["top"]]
    return out


def _isolation_line(r: dict[str, Any]) -> list[str]:
    iso = r.get("isolation")
    if not iso:
        return []
    return ["", f"Isolated mode: the worker's processes on cores {list(iso['workers'])}; the "
            f"broker, Redis and the load generator on {list(iso['services'])}."]  # fmt: skip


def render_markdown(r: dict[str, Any]) -> str:
    """The human report: targets, ceilings, open-loop levels, cost and quality tables."""
    m, b = r["machine"], r["bundle"]
    out = [
        "# riskstream bench pipeline",
        "",
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}. Bundle {b['model_version']} "
        f"({b['preset']}, {b['variant']}, N = {b['max_events']}); {r['events']:,} events; "
        f"worker batches of ≤ {r['options']['batch']}. Load average before / after: "
        f"{_loads(r.get('load_before'))} / {_loads(r.get('load_after'))}.",
        *_isolation_line(r),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        *(_row([t["target"], t["measured"], "yes" if t["met"] else "**no**"]) for t in targets(r)),
        "",
        "## Ceilings of the parts, per process and per host",
        "",
        "| part | one process /s | per batch p50 ms | per batch p99 ms | per host /s |",
        "|---|---:|---:|---:|---:|",
        _row(["model only (ONNX, the stream's windows)", _n(r["model"]["windows_per_s"]),
              _n(r["model"]["batch_p50_ms"], 1), _n(r["model"]["batch_p99_ms"], 1),
              _n(r.get("model_host", {}).get("windows_per_s"))]),
        _row(["Redis only (window script)", _n(r["redis"]["events_per_s"]),
              _n(r["redis"]["batch_p50_ms"], 1), _n(r["redis"]["batch_p99_ms"], 1),
              _n(r.get("redis_host", {}).get("events_per_s"))]),
        *_parse_rows(r),
        "",
        "Per host: the same measurement in as many processes at once as the largest worker run.",
        "",
        "## The worker, by process count (`riskstream worker --processes N`)",
        "",
        "| mode | processes | transport only /s | **drained** /s | share of min(model, "
        "transport) | mean batch | CPU while draining (cores) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for run in r["runs"]:
        p = run["pipeline"]
        out.append(_row([mode_of(run), run["processes"], _n(run["transport"]["events_per_s"]),
                         f"**{_n(p['events_per_s'])}**",
                         f"{p['events_per_s'] / ceiling_of(r, run):.0%}", _n(p["mean_batch"]),
                         _cpu(p.get("cpu", {}))]))  # fmt: skip
    out += [
        "",
        f"Pipeline batches (one process): mean {r['pipeline']['mean_batch']:.0f} events, Redis "
        f"{r['pipeline']['redis_ms_per_batch']:.1f} ms and inference "
        f"{r['pipeline']['inference_ms_per_batch']:.1f} ms per batch.",
        *_capacity_section(r),
        "",
        "## Open-loop load (levels: % of the sustained capacity)",
        "",
        "The load generator is a thread of the benchmark's process: shared mode, on any core; "
        "isolated mode, on the services' cores with the broker and Redis. Its CPU and the "
        "broker's and Redis's are shown beside the workers'.",
        "",
        "| mode | processes | load | offered /s | sustained /s | max lag | caught up after | "
        "alerts | event→alert p50 / p95 / p99 ms | event lag p99 (bucket) | CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for run in r["runs"]:
        for lv in run["levels"]:
            lat = lv["alert_latencies_ms"]
            qs = " / ".join(_n(quantile_ms(lat, q)) for q in (0.5, 0.95, 0.99))
            lag = max((x[1] for x in lv["lag"]), default=0)
            caught = ("not within 90 s" if lv["caught_up_s"] is None
                      else f"{lv['caught_up_s']:.1f} s")  # fmt: skip
            out.append(_row([mode_of(run), run["processes"], f"{lv['percent']} %",
                             _n(lv["offered_per_s"]),
                             _n(lv["sustained_per_s"]), _n(lag), caught, len(lat), qs,
                             f"≤ {_ms(bucket_quantile(lv['lag_buckets'], 0.99))} ms",
                             _cpu(lv.get("cpu", {}))]))  # fmt: skip
    out += _profile_section(r)
    out += ["", "## Cost vs window size N (full windows; model FP32, untrained, same shape)", "",
            "| N | model windows/s | model ms/batch | Redis events/s | Redis ms/batch |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in r["cost_vs_n"]:
        model, rds = c["model"], c["redis"]
        out.append(_row([c["n"], _n(model["windows_per_s"]), _n(model["batch_p50_ms"], 1),
                         _n(rds["events_per_s"]), _n(rds["batch_p50_ms"], 1)]))  # fmt: skip
    out += ["", "## Cost vs batch size", "",
            "| batch | model windows/s | pipeline events/s | mean batch | Redis ms/batch | "
            "inference ms/batch |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in r["cost_vs_batch"]:
        p = c["pipeline"]
        out.append(_row([c["batch"], _n(c["model"]["windows_per_s"]), _n(p["events_per_s"]),
                         _n(p["mean_batch"]), _n(p["redis_ms_per_batch"], 1),
                         _n(p["inference_ms_per_batch"], 1)]))  # fmt: skip
    out += ["", "## Quality vs speed", "",
            "| preset | variant | pipeline events/s | fraud PR-AUC | abnormal_click PR-AUC |",
            "|---|---|---:|---:|---:|"]  # fmt: skip
    for q in r["quality"]:
        out.append(_row([q["preset"], q["variant"], _n(q["events_per_s"]),
                         _n(q["fraud_pr_auc"], 4), _n(q["abnormal_click_pr_auc"], 4)]))  # fmt: skip
    out += ["", "Plots: " + ", ".join(f"`{p}`" for p in _PLOTS) + "."]
    return "\n".join(out) + "\n"


def _plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = host_run(r)
    levels = run["levels"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for each in r["runs"]:
        offered = [lv["offered_per_s"] for lv in each["levels"]]
        ax.plot(offered, offered, "k:", linewidth=0.8)
        line = ax.plot(offered, [lv["sustained_per_s"] for lv in each["levels"]], "o-",
                       label=f"sustained, {mode_of(each)}, {each['processes']} proc.")  # fmt: skip
        probes = each.get("capacity", {}).get("probes", [])
        if probes:  # the search's probes: x, large when the lag was not bounded
            ax.scatter([p["offered_per_s"] for p in probes],
                       [p["sustained_per_s"] for p in probes], marker="x",
                       color=line[0].get_color(),
                       s=[30 if p["bounded"] else 80 for p in probes])  # fmt: skip
    offered = [lv["offered_per_s"] for lv in levels] or [0.0]
    model = ceiling_model(r, run)
    rds = r.get("redis_host", r["redis"])["events_per_s"]
    for name, value, style in (("model only", model, "--"),
                               ("transport only", run["transport"]["events_per_s"], "-."),
                               ("Redis only", rds, ":")):  # fmt: skip
        ax.axhline(value, linestyle=style, color="grey", linewidth=1)
        ax.annotate(name, (offered[0], value), fontsize=8, va="bottom")
    ax.set(xlabel="offered events/s", ylabel="events/s", title="Throughput vs offered load")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[0], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for lv in levels:
        lat = lv["alert_latencies_ms"]
        if lat:
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=f"{lv['percent']} %")
    ax.axvline(TARGET_P99_MS, color="red", linestyle=":", linewidth=1)
    ax.set(xlabel="event → alert ms (subscriber's view)", ylabel="share of alerts",
           title=f"Latency CDF by load, {mode_of(run)}, {run['processes']} proc.",
           xscale="log")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for lv in levels:
        if lv["lag"]:
            t, lag = zip(*lv["lag"], strict=True)
            ax.plot(t, lag, label=f"{lv['percent']} %")
    ax.set(xlabel="s since the offer began", ylabel="consumer lag (messages)",
           title=f"Consumer lag over time, {mode_of(run)}, {run['processes']} proc.")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[2], dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    ns = [c["n"] for c in r["cost_vs_n"]]
    left.plot(ns, [1e6 / c["model"]["windows_per_s"] for c in r["cost_vs_n"]], "o-", label="model")
    left.plot(ns, [1e6 / c["redis"]["events_per_s"] for c in r["cost_vs_n"]], "s-", label="Redis")
    left.set(xlabel="window size N", ylabel="µs per event", xscale="log", yscale="log",
             title="Cost vs N (full windows)")  # fmt: skip
    left.legend()
    bs = [c["batch"] for c in r["cost_vs_batch"]]
    right.plot(bs, [c["model"]["windows_per_s"] for c in r["cost_vs_batch"]], "o-", label="model")
    right.plot(bs, [c["pipeline"]["events_per_s"] for c in r["cost_vs_batch"]], "s-",
               label="pipeline")  # fmt: skip
    right.set(xlabel="batch size", ylabel="events/s", xscale="log", title="Throughput vs batch")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / _PLOTS[3], dpi=120)
    plt.close(fig)


def write_report(r: dict[str, Any], out: Path) -> list[Path]:
    """Write the JSON, the markdown and the plots; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "pipeline.md").write_text(render_markdown(r))
    _plots(r, out)
    return [out / "pipeline.json", out / "pipeline.md", *(out / p for p in _PLOTS)]
