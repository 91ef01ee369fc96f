"""Does the review loop pay? A model retrained with analysts' decisions on its own alerts, measured
on a fresh world against the same model trained without them.

1. Simulate world A (training) and world B (fresh, another seed).
2. Train M0 on A (labels + chargebacks), tiny preset.
3. M0 scores every event of A; its alerts (score ≥ its threshold) become cases, one per user and
   head; a simulated analyst judges each from the simulator's ground truth: attack → confirmed,
   normal user → false positive, known 15 min after the last alert of the case. The decisions
   go through `riskstream labels export`'s code (`feedback_lines`) into a feedback file beside
   the chargebacks; the trainer keeps only those known before its cut.
4. Train M1 on A with that feedback (same seed, same schedule).
5. Score B with both; count the normal users each alerts (at its own threshold, and at M0's),
   the attack episodes caught, PR-AUC.

    riskstream bench review-feedback --users 1500 --seeds 0 1

Takes several minutes per seed on 2 cores (two trainings); the results table is printed and
written to out/bench/review_feedback/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from events import LABELS, Decision
from events.contract import Verdict
from riskstream.review.labels import feedback_lines
from simulator import WorldConfig, simulate_world
from training.config import TrainConfig
from training.data import load_corpus
from training.evaluate import checkpoint_scorer, eval_input
from training.examples import build_examples
from training.metrics import head_metrics, normal_user_mask
from training.train import train

ANALYST_DELAY_MS = 15 * 60_000


def simulated_decisions(model: Path, world: Path) -> list[Decision]:
    """M0's alerts on `world`, judged by the simulator's ground truth."""
    scorer = checkpoint_scorer(model)
    corpus = load_corpus(
        world / "events.jsonl",
        world / "labels.jsonl",
        spec=scorer.spec,
        session_gap_s=scorer.session_gap_s,
        progress=False,
    )
    users = np.arange(len(corpus.users), dtype=np.int32)
    ex = build_examples(corpus, users, scorer.policy)
    scores = scorer.score(corpus, ex, False)
    decisions = []
    for h, head in enumerate(LABELS):
        alerted = np.flatnonzero(scores[:, h] >= scorer.thresholds[head])
        by_user: dict[int, list[int]] = {}
        for i in alerted.tolist():
            by_user.setdefault(int(ex.user_index[i]), []).append(i)
        for ui, rows in by_user.items():
            user = corpus.users[ui]
            start = min(int(user.ts_ms[ex.start[i]]) for i in rows)
            end = max(int(ex.ts_ms[i]) for i in rows)
            attack = bool(ex.y[rows, h].max() > 0)
            verdict: Verdict = "false_positive"
            if attack:
                verdict = "confirmed_fraud" if head == "fraud" else "confirmed_abnormal_click"
            decisions.append(
                Decision(
                    f"sim-{head}-{user.user_id}",
                    f"{head}-{ui}",
                    (f"a-{rows[0]}",),
                    (head,),
                    user.user_id,
                    verdict,
                    start,
                    end,
                    "simulated",
                    end + ANALYST_DELAY_MS,
                )
            )
    return decisions


def measure(model: Path, world: Path, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    scorer = checkpoint_scorer(model)
    thr = thresholds or scorer.thresholds
    corpus = load_corpus(
        world / "events.jsonl",
        world / "labels.jsonl",
        world / "feedback.jsonl",
        spec=scorer.spec,
        session_gap_s=scorer.session_gap_s,
        progress=False,
    )
    users = np.arange(len(corpus.users), dtype=np.int32)
    ex = build_examples(corpus, users, scorer.policy)
    inp = eval_input(corpus, ex, scorer.score(corpus, ex, False))
    normal = normal_user_mask(inp)
    alerted_any = np.zeros(len(ex), dtype=bool)
    out: dict[str, Any] = {"thresholds": thr}
    for h, head in enumerate(LABELS):
        m = head_metrics(inp, h, thr[head])
        alerted = inp.scores[:, h] >= thr[head]
        alerted_any |= alerted
        out[head] = {
            "normal_users_alerted": len(set(inp.user_ids[alerted & normal].tolist())),
            "episode_recall": m["episode_recall"],
            "pr_auc": m["pr_auc"],
        }
    out["normal_users"] = len(set(inp.user_ids[normal].tolist()))
    out["normal_users_alerted"] = len(set(inp.user_ids[alerted_any & normal].tolist()))
    return out


def run(seed: int, users: int, root: Path) -> dict[str, Any]:
    began = time.perf_counter()
    a, b = root / f"world_a_{seed}", root / f"world_b_{seed}"
    simulate_world(
        WorldConfig(users=users, days=1.0, seed=100 + seed, attack_share=0.12), a, progress=False
    )
    simulate_world(
        WorldConfig(users=users, days=1.0, seed=200 + seed, attack_share=0.12), b, progress=False
    )
    cfg = TrainConfig.for_preset("tiny", seed=seed)
    m0, m1 = root / f"m0_{seed}", root / f"m1_{seed}"
    train(
        a / "events.jsonl",
        a / "labels.jsonl",
        m0,
        cfg,
        feedback=a / "feedback.jsonl",
        progress=False,
    )
    decisions = simulated_decisions(m0, a)
    feedback = root / f"feedback_{seed}.jsonl"
    lines = a.joinpath("feedback.jsonl").read_bytes()
    lines += b"".join(orjson.dumps(x) + b"\n" for d in decisions for x in feedback_lines(d))
    feedback.write_bytes(lines)
    report = train(
        a / "events.jsonl", a / "labels.jsonl", m1, cfg, feedback=feedback, progress=False
    )
    before, after = measure(m0, b), measure(m1, b)
    after_at_m0 = measure(m1, b, before["thresholds"])
    verdicts: dict[str, int] = {}
    for d in decisions:
        verdicts[d.verdict] = verdicts.get(d.verdict, 0) + 1
    return {
        "seed": seed,
        "users": users,
        "decisions": verdicts,
        "used_by_training": {
            "known_negatives": report["data"]["known_negatives"],
            "episodes": report["data"]["episodes"],
        },
        "m0": before,
        "m1": after,
        "m1_at_m0_thresholds": after_at_m0,
        "wall_s": round(time.perf_counter() - began, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="riskstream bench review-feedback", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench/review_feedback"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run(seed, args.users, args.out) for seed in args.seeds]
    (args.out.parent / "review_feedback.json").write_text(json.dumps(results, indent=2))
    print(
        "| seed | decisions (FP / confirmed) | normal users alerted on B: M0 → M1 (own thr.) "
        "| M1 at M0's thr. | episode recall fraud / abnormal: M0 → M1 "
        "| PR-AUC fraud: M0 → M1 |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        fp = r["decisions"].get("false_positive", 0)
        ok = sum(v for k, v in r["decisions"].items() if k.startswith("confirmed"))
        m0, m1, m1b = r["m0"], r["m1"], r["m1_at_m0_thresholds"]

        def rec(m: dict[str, Any]) -> str:
            return (
                f"{m['fraud']['episode_recall']:.2f} / {m['abnormal_click']['episode_recall']:.2f}"
            )

        print(
            f"| {r['seed']} | {fp} / {ok} | {m0['normal_users_alerted']} → "
            f"{m1['normal_users_alerted']} of {m0['normal_users']} | "
            f"{m1b['normal_users_alerted']} | {rec(m0)} → {rec(m1)} | "
            f"{m0['fraud']['pr_auc']:.3f} → {m1['fraud']['pr_auc']:.3f} |"
        )


if __name__ == "__main__":
    main()
