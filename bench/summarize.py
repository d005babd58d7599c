"""Summarization targets (issue 26): on each corpus (text, code), a model trained for a budget by the clock against
the three baselines, on modules held out from training, with 95% bootstrap intervals.

    python bench/summarize.py OUT_DIR [--minutes 15] [--threads 2] [--jobs 1] [--only code text]

Target, per corpus: ROUGE-L >= the best baseline's + 5, with non-overlapping 95% intervals. ``--jobs 2`` trains
both corpora at once, one thread each (a 2-core machine: each gets a core); say so when quoting. Results:
OUT_DIR/results.json (``qkv eval --json`` of each run, its update count and wall time), the table and ten summaries
per corpus beside their references on stdout.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trained
from machine import describe

from qkv.evaluation.summarization import intervals_apart, score_table


def train_and_eval(corpus: str, out: Path, minutes: float, threads: int) -> dict:
    run = out / corpus
    wall = trained.train(run, f"summarize-{corpus}", minutes, threads)
    config = json.loads((run / "config.json").read_text())
    return {"corpus": corpus, "minutes": minutes, "threads": threads, "wall_s": wall, "updates": trained.updates(run),
            "train_pairs": config["data_meta"]["train_pairs"], "eval": trained.evaluate(run, threads)}


def table(r: dict) -> list[str]:
    e = r["eval"]
    lines = [f"{r['corpus']}: {e['documents']} test documents ({e['source']}), {r['train_pairs']} training pairs, "
             f"{r['updates']} updates in {r['minutes']} min on {r['threads']} thread(s), beam {e['beam']}",
             *score_table(e["scores"])]
    m, b = e["scores"]["model"]["rougeL"], e["scores"][e["best_baseline"]]["rougeL"]
    gap = e["rougeL_over_best_baseline"]
    apart = intervals_apart(m, b)  # with gap > 0: the model's interval lies above
    met = gap >= 5.0 and apart
    lines.append(f"  ROUGE-L over the best baseline ({e['best_baseline']}): {gap:+.2f}; intervals "
                 f"{'apart' if apart else 'overlap'} -> target (>= +5, apart): {'met' if met else 'not met'}")
    lines.append("  ten summaries beside their references:")
    for ex in e["examples"]:
        lines.append(f"    ref: {ex['reference']}\n    out: {ex['model']}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--only", nargs="+", default=["code", "text"], choices=["code", "text"])
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe(args.threads), flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {c: pool.submit(train_and_eval, c, out, args.minutes, args.threads) for c in args.only}
        results = {c: f.result() for c, f in futures.items()}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    for r in results.values():
        print("\n".join(table(r)))


if __name__ == "__main__":
    main()
