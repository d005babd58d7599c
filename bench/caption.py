"""Captioning: the preset trained for its budget, the pooled-vector baseline trained the same way, back to back.

    python bench/caption.py --out DIR [--minutes 15] [--preset shapes-caption] [--threads 2]
                            [--n 500] [--report-only] [--clips [--clip-minutes 10]] [--json FILE]

1. `qkv train --config CONFIG --out DIR/patches --train.max_minutes M`: the captioner whose decoder attends to
   every patch (issue 16's preset).
2. The same command with `--model.memory pooled --out DIR/pooled`: the same encoder and decoder, conditioned on
   one vector, the mean of the encoder's outputs (each cross-attention has one key).
3. Both captioners caption the same fresh test scenes (`qkv eval RUN --n N`, greedy): every seen object count,
   the held-out colour–shape pairs and the held-out count; exact match, per-attribute accuracy, BLEU-4, CIDEr-D
   per group, side by side, with what attention adds (patches − pooled, in points of exact match).
4. The target: exact match ≥ 90% on seen scenes of one and of two objects (each group, the preset's run).
5. With --clips, also the `shapes-clips-caption` preset for --clip-minutes, and its exact match on held-out clips.

--report-only scores existing runs in DIR. The first line is the machine (bench/machine.py); training is timed
by each run's own clock (its metrics.jsonl), evaluation is not part of the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import describe

REPO = Path(__file__).resolve().parents[1]
ATTRS = ("count", "shape", "colour", "size", "position")


def train(config: str, out: Path, minutes: float, threads: int, *extra: str) -> None:
    cmd = [sys.executable, "-m", "qkv", "train", "--config", config, "--out", str(out), "--train.max_minutes",
           str(minutes), "--train.progress", "false", "--train.threads", str(threads), "--no-sample", *extra]
    print("$ " + " ".join(["qkv", *cmd[3:]]), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))


def evaluate(run: Path, n: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "qkv", "eval", str(run), "--n", str(n), "--json"]
    print("$ " + " ".join(["qkv", *cmd[3:]]), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(threads))).stdout
    return json.loads(out)


def training_record(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [m for m in lines if "loss" in m]
    evals = [m for m in lines if "val_exact" in m]
    last = steps[-1]
    return {"steps": last["step"], "seconds": last["elapsed_s"],
            "val_exact": evals[-1]["val_exact"] if evals else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--config", default=str(REPO / "src" / "qkv" / "presets" / "shapes-caption.toml"))
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=500, help="test scenes per group")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--clips", action="store_true", help="also train and score the clip preset")
    ap.add_argument("--clip-minutes", type=float, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(describe(args.threads), flush=True)
    runs = {"patches": args.out / "patches", "pooled": args.out / "pooled"}
    if not args.report_only:
        train(args.config, runs["patches"], args.minutes, args.threads)
        train(args.config, runs["pooled"], args.minutes, args.threads, "--model.memory", "pooled")
        if args.clips:
            train(str(REPO / "src" / "qkv" / "presets" / "shapes-clips-caption.toml"), args.out / "clips",
                  args.clip_minutes, args.threads)
    results = {k: evaluate(v, args.n, args.threads) for k, v in runs.items()}
    record = {k: training_record(v) for k, v in runs.items()}
    print(f"\ntraining ({args.minutes:g} minutes each, {args.threads} threads):")
    for k, r in record.items():
        print(f"  {k:<8} {r['steps']:>6,} steps in {r['seconds']:.0f} s; last validation exact match "
              f"{100 * (r['val_exact'] or 0):.1f}%")
    print(f"\ntest: {results['patches']['source']}; greedy")
    head = f"{'group':<46} {'patches':>8} {'pooled':>8} {'attention adds':>15}   per attribute (patches | pooled)"
    print(head + "\n" + "-" * len(head))
    for gp, gq in zip(results["patches"]["groups"], results["pooled"]["groups"], strict=True):
        a, b = 100 * gp["exact_match"], 100 * gq["exact_match"]
        attrs = " ".join(f"{x} {100 * gp['attributes'][x]:.0f}|{100 * gq['attributes'][x]:.0f}" for x in ATTRS)
        print(f"{gp['group'][:46]:<46} {a:>7.1f}% {b:>7.1f}% {a - b:>+14.1f}   {attrs}")
    print("\nBLEU-4 / CIDEr-D (patches | pooled):")
    for gp, gq in zip(results["patches"]["groups"], results["pooled"]["groups"], strict=True):
        print(f"  {gp['group'][:46]:<46} {gp['bleu4']['score']:6.2f} | {gq['bleu4']['score']:6.2f}   "
              f"{gp['cider_d']:6.3f} | {gq['cider_d']:6.3f}")
    target = {g["group"]: g["exact_match"] for g in results["patches"]["groups"][:2]}
    met = all(v >= 0.9 for v in target.values())
    print(f"\ntarget (exact match ≥ 90% on seen scenes of one and of two objects): "
          f"{', '.join(f'{k} {100 * v:.1f}%' for k, v in target.items())} -> {'met' if met else 'NOT met'}")
    out = {"machine": describe(args.threads), "minutes": args.minutes, "training": record, "results": results}
    if args.clips or (args.out / "clips").is_dir():
        clips = evaluate(args.out / "clips", args.n, args.threads)
        out["clips"] = {"training": training_record(args.out / "clips"), "results": clips}
        print("\nclips (held-out test clips, greedy):")
        for g in clips["groups"]:
            print(f"  {g['group'][:60]:<60} exact {100 * g['exact_match']:5.1f}%  "
                  + " ".join(f"{x} {100 * g['attributes'][x]:.0f}%" for x in ATTRS))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
