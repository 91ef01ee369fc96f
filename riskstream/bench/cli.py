"""`riskstream bench ...`: each benchmark prints a table and saves JSON beside the others."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from events.outputs import check_output
from riskstream.bench.contract import bench_parse
from riskstream.bench.core import BenchResult
from riskstream.bench.training import bench_train
from riskstream.bench.world import bench_simulate
from training.config import DEFAULT_PRESET

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks (figures go to docs/benchmarks.md).", no_args_is_help=True)

OutOpt = Annotated[Path, typer.Option("--out", help="Directory for the JSON results.")]


def _show(result: BenchResult, out: Path) -> None:
    result.print()
    result.save(out)


@bench_app.command("parse")
def parse_cmd(
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", exists=True, dir_okay=False, help="JSONL file (default: simulate)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1000, help="Messages to time.")] = 200_000,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 3,
    out: OutOpt = Path("out/bench"),
) -> None:
    """Parse + validate throughput on one core."""
    check_output(out, "--out", folder=True)
    _show(bench_parse(events, limit, repeats), out)


@bench_app.command("simulate")
def simulate_cmd(
    users: Annotated[int, typer.Option("--users", min=1)] = 20_000,
    days: Annotated[float, typer.Option("--days", min=0.01)] = 2.0,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    out: OutOpt = Path("out/bench"),
) -> None:
    """Simulator throughput on a 20k-user world."""
    check_output(out, "--out", folder=True)
    _show(bench_simulate(users, days, seed), out)


@bench_app.command("train")
def train_cmd(
    preset: Annotated[str, typer.Option("--preset", help="tiny, small or base.")] = "small",
    users: Annotated[int, typer.Option("--users", min=1)] = 20_000,
    days: Annotated[float, typer.Option("--days", min=0.01)] = 2.0,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    out: OutOpt = Path("out/bench"),
) -> None:
    """Training time per phase and samples/s for a preset on a simulated world."""
    check_output(out, "--out", folder=True)
    _show(bench_train(preset, users, days, seed), out)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: comma-separated integers", param_hint=flag) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{text!r}: positive integers", param_hint=flag)
    return values


@bench_app.command("pipeline")
def pipeline_cmd(
    bundle: Annotated[
        Path, typer.Option("--bundle", exists=True, file_okay=False, help="Model bundle.")
    ],
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            exists=True,
            dir_okay=False,
            help="JSONL events (default: simulate 20k users × 1 day).",
        ),
    ] = None,
    compare: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            exists=True,
            file_okay=False,
            help="More bundles for quality vs speed (repeatable).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Worker batch size.")] = 1024,
    loads: Annotated[
        str, typer.Option("--loads", help="Offered load, % of the sustained capacity.")
    ] = "25,50,75",
    duration_s: Annotated[float, typer.Option("--duration-s", min=1, help="Per level.")] = 20.0,
    span_s: Annotated[
        float, typer.Option("--span-s", min=1, help="Per capacity probe (held with bounded lag).")
    ] = 60.0,
    probes: Annotated[
        int, typer.Option("--probes", min=1, help="Capacity search probes per mode and count.")
    ] = 5,
    isolate: Annotated[
        bool,
        typer.Option("--isolate", help="Also pin the worker to its own cores (needs ≥ 2 cores)."),
    ] = False,
    drain_events: Annotated[int, typer.Option("--drain-events", min=1000)] = 60_000,
    window_sizes: Annotated[str, typer.Option("--window-sizes")] = "16,64,256",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes")] = "32,256,1024",
    redis_url: Annotated[
        str | None, typer.Option("--redis", help="Redis URL (default: an embedded Valkey).")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", exists=True, dir_okay=False, help="Worker rules.")
    ] = Path("config/rules.yaml"),
    out: Annotated[Path, typer.Option("--out")] = Path("out/bench/pipeline"),
    processes: Annotated[
        str | None,
        typer.Option("--processes", help="Worker process counts to run (default: 1,CORES)."),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu or cuda (the workers and the model ceiling).")
    ] = "cpu",
    profile: Annotated[
        bool,
        typer.Option("--profile", help="py-spy on every worker process: each drain and load."),
    ] = False,
) -> None:
    """Ceilings (model, transport, Redis, parse), the worker with 1 and N processes: drained,
    sustained capacity (bounded lag for --span-s), 25–75 % of it; shared and (--isolate) pinned
    apart; cost vs N and batch, quality vs speed: JSON, markdown and PNGs under --out."""
    check_output(out, "--out", folder=True)
    from riskstream.bench.pipeline import PipelineOptions, run_pipeline_bench
    from riskstream.bench.pipeline.report import render_markdown
    from riskstream.supervisor import default_processes

    counts = _ints(processes, "--processes") if processes else (1, default_processes())
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{device!r}: cpu or cuda", param_hint="--device")

    opts = PipelineOptions(
        bundle=bundle, events=events, out=out, batch=batch,
        loads_pct=_ints(loads, "--loads"), duration_s=duration_s, drain_events=drain_events,
        span_s=span_s, max_probes=probes, isolate=isolate,
        window_sizes=_ints(window_sizes, "--window-sizes"),
        batch_sizes=_ints(batch_sizes, "--batch-sizes"), compare=tuple(compare or ()),
        redis_url=redis_url, rules=rules, processes=tuple(sorted(set(counts))), device=device,
        profile=profile,
    )  # fmt: skip
    result = run_pipeline_bench(opts)
    typer.echo(render_markdown(result))
    typer.echo(f"written: {out}/pipeline.json, pipeline.md and PNG plots")


@bench_app.command("gpu")
def gpu_cmd(
    presets: Annotated[str, typer.Option("--presets", help="Comma-separated.")] = "tiny,small,base",
    users: Annotated[int, typer.Option("--users", min=100, help="World for windows.")] = 3000,
    out: OutOpt = Path("out/bench"),
) -> None:
    """The model on CUDA per preset: provider verified, FP16 parity, windows/s at batch 256,
    1,024 and 4,096 (one line and exit 1 where there is no CUDA device)."""
    check_output(out, "--out", folder=True)
    from riskstream.bench.gpu import bench_gpu

    names = tuple(p.strip() for p in presets.split(",") if p.strip())
    _show(bench_gpu(names, users), out)


@bench_app.command("shadow")
def shadow_cmd(
    bundle: Annotated[
        Path, typer.Option("--bundle", exists=True, file_okay=False, help="The live bundle.")
    ],
    events: Annotated[
        Path, typer.Option("--events", exists=True, dir_okay=False, help="JSONL events.")
    ],
    shadow: Annotated[
        Path | None,
        typer.Option(
            "--shadow-bundle",
            exists=True,
            file_okay=False,
            help="Default: the live bundle under another version (a shadow as big).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=100, help="Events per run.")] = 20_000,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Events per batch.")] = 256,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Runs of each, alternating.")] = 3,
    redis_url: Annotated[
        str | None, typer.Option("--redis", help="Redis URL (default: an embedded Valkey).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write shadow.json here.")] = None,
) -> None:
    """The live path's latency per batch with and without a shadow model (the worker's
    runtime on a real Redis; no broker)."""
    if out is not None:
        check_output(out, "--out", folder=True)
    from riskstream.bench.shadow import bench_shadow, render
    from riskstream.localstack import RedisService

    service = RedisService(url=redis_url)
    service.start(timeout_s=15.0)
    try:
        result = bench_shadow(bundle, events, service.url, shadow=shadow, limit=limit,
                              batch=batch, rounds=rounds)  # fmt: skip
    finally:
        service.stop()
    render(result, out)


@bench_app.command("bundle")
def bundle_cmd(
    bundle: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Bundle folder (export).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON and markdown here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Windows/s and latency of a bundle: torch eager vs ORT FP32/INT8 (and CUDA when here)."""
    if out is not None:
        check_output(out, "--out", folder=True)
    from riskstream.bench.bundle import bench_bundle, render_bench

    render_bench(bench_bundle(bundle, progress=not quiet), out)


@bench_app.command("quality")
def quality_cmd(
    out: Annotated[Path, typer.Option("--out", help="Worlds, runs and tables.")] = Path(
        "docs/bench/quality"
    ),
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds 0 … N-1.")] = 3,
    worlds: Annotated[
        list[str] | None, typer.Option("--world", help="default and/or hard (repeatable).")
    ] = None,
    users: Annotated[int, typer.Option("--users", min=100)] = 20_000,
    days: Annotated[float, typer.Option("--days", min=0.1)] = 2.0,
    eval_users: Annotated[
        int | None, typer.Option("--eval-users", min=100, help="Default: --users.")
    ] = None,
    preset: Annotated[str, typer.Option("--preset", help="tiny, small or base.")] = DEFAULT_PRESET,
    attack_share: Annotated[float, typer.Option("--attack-share", min=0.0, max=0.5)] = 0.02,
    label_share: Annotated[
        list[float] | None,
        typer.Option("--label-share", min=0.01, max=1.0, help="Efficiency table (repeatable)."),
    ] = None,
    pretrain_users: Annotated[
        int,
        typer.Option(
            "--pretrain-users",
            min=0,
            help="Users of the unlabeled world the efficiency table pretrains on (0: 10 × users).",
        ),
    ] = 0,
    pretrain_windows: Annotated[
        int,
        typer.Option(
            "--pretrain-windows",
            min=0,
            help="Masked windows the efficiency table pretrains on (0: the preset's).",
        ),
    ] = 0,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A training setting for every run, key=value (repeatable): "
            "--set val_after_quantile=0.6. Finished runs in --out are reused as they are.",
        ),
    ] = None,
) -> None:
    """Shipped model vs the GBDT on the same aggregates and data, judged on a separately
    simulated world: mean ± spread over seeds, per world kind (finished runs are reused)."""
    check_output(out, "--out", folder=True)
    from riskstream.bench.quality import QualityPlan, bench_quality
    from training.config import TrainConfig
    from training.exceptions import TrainingError

    try:
        chosen = TrainConfig.from_sources(preset, sets=sets or []).to_dict()
    except TrainingError as exc:
        raise typer.BadParameter(str(exc)) from None
    defaults = TrainConfig.for_preset(preset).to_dict()
    settings = {k: v for k, v in chosen.items() if v != defaults[k]}
    try:
        plan = QualityPlan(
            out=out,
            seeds=tuple(range(seeds)),
            worlds=tuple(worlds or ("default", "hard")),
            users=users,
            days=days,
            eval_users=eval_users,
            preset=preset,
            attack_share=attack_share,
            label_shares=tuple(label_share or ()),
            pretrain_users=pretrain_users,
            pretrain_windows=pretrain_windows,
            settings=settings,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    bench_quality(plan).print()


@bench_app.command("decide")
def decide_cmd(
    bundle: Annotated[
        Path, typer.Option("--bundle", exists=True, file_okay=False, help="Model bundle.")
    ],
    rates: Annotated[str, typer.Option("--rates", help="Requests/s, comma-separated.")] = (
        "50,100,200,300"
    ),
    seconds: Annotated[float, typer.Option("--seconds", min=1, help="Per rate.")] = 10.0,
    users: Annotated[int, typer.Option("--users", min=1)] = 500,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Service processes.")] = 1,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="ONNX Runtime threads per worker.")
    ] = 1,
    http: Annotated[str, typer.Option("--http", help="auto, h11 or httptools.")] = "auto",
    loop: Annotated[str, typer.Option("--loop", help="auto, asyncio or uvloop.")] = "asyncio",
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="The service's --max-batch (1: none).")
    ] = 32,
    loadgen: Annotated[
        str,
        typer.Option("--loadgen", help="raw (its own process) or httpx (in the bench process)."),
    ] = "raw",
    out: OutOpt = Path("docs/bench/decide"),
) -> None:
    """Latency of `riskstream decide serve` (open loop, real Redis: RISKSTREAM_REDIS_URL)."""
    import os

    from riskstream.bench.decide import bench_decide

    if loadgen not in ("raw", "httpx"):
        raise typer.BadParameter(f"raw or httpx, got {loadgen!r}", param_hint="--loadgen")
    try:
        rate_list = [float(r) for r in rates.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"numbers, comma-separated: {rates!r}", param_hint="--rates"
        ) from None
    redis_url = os.environ.get("RISKSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0")
    check_output(out, "--out", folder=True)
    result = bench_decide(
        bundle, redis_url, rate_list, seconds=seconds, users=users, workers=workers,
        threads=threads, http=http, loop=loop, loadgen=loadgen, max_batch=max_batch,
    )  # fmt: skip
    _show(result, out)


@bench_app.command("soak")
def soak_cmd(
    bundle: Annotated[
        Path, typer.Option("--bundle", exists=True, file_okay=False, help="Model bundle.")
    ],
    minutes: Annotated[float, typer.Option("--minutes", min=0.5, help="Offer this long.")] = 30.0,
    rate: Annotated[float, typer.Option("--rate", min=1, help="Offered events/s.")] = 400.0,
    out: Annotated[Path, typer.Option("--out", help="soak.json, .md, .png.")] = Path(
        "docs/bench/soak"
    ),
    rules: Annotated[
        Path | None, typer.Option("--rules", exists=True, dir_okay=False, help="Worker rules.")
    ] = Path("config/rules.yaml"),
    no_faults: Annotated[bool, typer.Option("--no-faults", help="Steady load only.")] = False,
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help="Broker storage: memory (no broker restart) or s3 (moto; adds the broker "
            "restart, slow).",
        ),
    ] = "memory",
    linger_ms: Annotated[
        float,
        typer.Option(
            "--linger-ms",
            min=0,
            help="The load generator's linger.ms (events per record batch, as a collector "
            "batches; Tansu slows with the batches a partition holds).",
        ),
    ] = 5.0,
) -> None:
    """The real worker (supervised) on Tansu + Valkey for --minutes at --rate (open loop), with
    Redis restart, worker SIGTERM and SIGKILL, broker restart: RSS, lag, p99 per minute,
    commits vs produced, recovery after each fault (JSON, markdown, PNG under --out)."""
    check_output(out, "--out", folder=True)
    from riskstream.bench.soak import SoakOptions, faults_for, render_soak_markdown, run_soak

    if storage not in ("memory", "s3"):
        raise typer.BadParameter(f"{storage!r}: memory or s3", param_hint="--storage")
    opts = SoakOptions(bundle=bundle, minutes=minutes, rate=rate, out=out, rules=rules,
                       faults=() if no_faults else faults_for(storage),
                       storage=storage, linger_ms=linger_ms)  # fmt: skip
    result = run_soak(opts)
    typer.echo(render_soak_markdown(result))
    typer.echo(f"written: {out}/soak.json, soak.md, soak.png")
    if not all(v for k, v in result["targets"].items() if k != "rss_growth_max"):
        raise typer.Exit(1)


@bench_app.command("train-scale")
def train_scale_cmd(
    users: Annotated[
        str, typer.Option("--users", help="World sizes in users, comma-separated.")
    ] = "1000,2000,4000",
    days: Annotated[float, typer.Option("--days", min=0.01)] = 2.0,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    jobs: Annotated[
        str, typer.Option("--jobs", help="Ingest parsing processes to time, comma-separated.")
    ] = "1,2",
    work: Annotated[
        Path, typer.Option("--work", help="Folder for the worlds and datasets (kept, reused).")
    ] = Path("out/train-scale"),
    out: OutOpt = Path("out/bench"),
    phases: Annotated[
        bool,
        typer.Option(
            "--phases", help="Also train's data path (corpus, examples, GBDT): RSS per phase."
        ),
    ] = False,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="GBDT boosting rounds with --phases.")
    ] = 20,
) -> None:
    """Reading the corpus as it grows: JSON lines vs the Parquet dataset (wall, events/s,
    peak RSS, bytes per event, growth fit), and `ingest` with 1..N processes; with
    --phases, train's data path's peak RSS per phase."""
    from riskstream.bench.train_scale import bench_train_scale

    check_output(out, "--out", folder=True)
    check_output(work, "--work", folder=True)
    sizes, procs = _ints(users, "--users"), _ints(jobs, "--jobs")
    _show(bench_train_scale(sizes, days, seed, work, procs, phases, rounds), out)


#: Benchmarks with their own argparse options (`riskstream bench NAME --help`): name → module.
SCRIPTS = {
    "redis-memory": "riskstream.bench.redis_memory",
    "tansu-cpu": "riskstream.bench.tansu_cpu",
    "confluent-transport": "riskstream.bench.confluent_transport",
    "review-feedback": "riskstream.bench.review_feedback",
    "lists-lookup": "riskstream.bench.lists_lookup",
}


def _script(name: str, module: str) -> None:
    first_line = {
        "redis-memory": "Redis bytes per user with a full window, and append_batch events/s.",
        "tansu-cpu": "The broker's CPU per fetch and per produce request.",
        "confluent-transport": "The transport-only worker on aiokafka vs confluent-kafka.",
        "review-feedback": "Analysts' decisions as labels: the next model with and without.",
        "lists-lookup": "Allow/deny lists: memory and lookup cost at 1M entries.",
    }[name]

    @bench_app.command(
        name,
        help=f"{first_line} Options: riskstream bench {name} --help.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def run(ctx: typer.Context) -> None:
        import importlib

        code = importlib.import_module(module).main(list(ctx.args))
        raise typer.Exit(int(code or 0))


for _name, _module in SCRIPTS.items():
    _script(_name, _module)
