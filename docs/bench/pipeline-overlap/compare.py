"""Before / after table of `riskstream bench pipeline` runs (issue 30 §2), one column per run.

    .venv/bin/python docs/bench/pipeline-overlap/compare.py docs/bench/pipeline-overlap/before \\
        docs/bench/pipeline-overlap/vectorised docs/bench/pipeline-overlap/pipelined \\
        > docs/bench/pipeline-overlap/compare.md

Besides each figure, events per worker CPU-second (drained events/s ÷ the worker processes'
cores while draining): on a host shared with other jobs the workers got very different shares
of the cores from run to run, and this is the figure that share does not move as much.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def _fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def main() -> None:
    runs = [(Path(a).name, json.loads((Path(a) / "pipeline.json").read_text()))
            for a in sys.argv[1:]]  # fmt: skip
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any) -> None:
        rows.append((label, [fn(r) for _, r in runs]))

    row("load average before / after (1 min)",
        lambda r: f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}")  # fmt: skip
    row("model only, one process (windows/s)", lambda r: _fmt(r["model"]["windows_per_s"]))
    row("model only, per host (windows/s)",
        lambda r: _fmt(r.get("model_host", {}).get("windows_per_s")))  # fmt: skip
    for i, procs in enumerate((1, 2)):

        def run(r: dict[str, Any], i: int = i) -> dict[str, Any]:
            return r["runs"][i]  # type: ignore[no-any-return]

        row(f"{procs} proc.: transport only (events/s)",
            lambda r, run=run: _fmt(run(r)["transport"]["events_per_s"]))  # fmt: skip
        row(f"{procs} proc.: **drained** (events/s)",
            lambda r, run=run: _fmt(run(r)["pipeline"]["events_per_s"]))  # fmt: skip

        def cores(r: dict[str, Any], run: Any = run) -> float:
            cpu = run(r)["pipeline"]["cpu"]
            return float(sum(v for k, v in cpu.items() if k.startswith("worker")))

        row(f"{procs} proc.: worker cores while draining", lambda r, c=cores: f"{c(r):.2f}")
        row(
            f"{procs} proc.: drained per worker CPU-second",
            lambda r, run=run, c=cores: _fmt(run(r)["pipeline"]["events_per_s"] / c(r)),
        )
        for lv in range(3):

            def level(r: dict[str, Any], run: Any = run, lv: int = lv) -> str:
                x = run(r)["levels"][lv]
                lat = x["alert_latencies_ms"]
                return (f"{x['offered_per_s']:,.0f} → {x['sustained_per_s']:,.0f}; "
                        f"p50 / p99 {_fmt(_p(lat, 50))} / {_fmt(_p(lat, 99))} ms "
                        f"({len(lat)} alerts)")  # fmt: skip

            pct = runs[0][1]["runs"][i]["levels"][lv]["percent"]
            row(f"{procs} proc., {pct} %: offered → sustained /s; event→alert", level)
    row("quality table: drained fp32 / int8 (1 proc., events/s)",
        lambda r: " / ".join(_fmt(q["events_per_s"]) for q in r["quality"]))  # fmt: skip
    print("| | " + " | ".join(name for name, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
