"""The speedrun options of GPTConfig (and Muon), each alone and combined, at one wall-clock budget.

    QKV_DATA_DIR=../shared/data python bench/gpt_options.py [--budget-s 60] [--seeds 1337 1 2]
        [--base src/qkv/presets/shakespeare-char-fast.toml] [--only baseline relu2 ...] [--threads 2]
        [--combined relu2 qk_norm ...] [--steps N] [--extra --train.lr 3e-3 ...]

The base is the `shakespeare-char-speedrun` preset with every option off, AdamW and the learning rate of
the fast recipe, 2e-3 (`OFF` below). Each row turns one option on (`ROWS`); `combined` turns on the options
--combined names, at that same learning rate; `speedrun` is the preset as shipped (its options at its own
learning rate, 6e-3). Each run is `qkv train --config BASE` with the row's overrides, the learning-rate decay
spread over the budget (`--train.schedule_by time --train.max_minutes budget/60`), and one full-pass evaluation of the
validation split at the end; every seed is a fresh process, run one after another so that no two runs share
the cores. Printed per row: full-pass validation loss, mean ± spread (half the max − min over seeds), its
change against the baseline row, steps done and median tokens/s. The table is Markdown, ready for
docs/benchmarks.md; the first line names the machine. With --steps N every row trains N steps instead (the
decay over them): the options' effect per step, free of how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe

# The base: the speedrun preset with every option off, AdamW, and the fast recipe's learning rate 2e-3
OFF = ["--model.activation", "gelu", "--model.qk_norm", "false", "--model.zero_init_proj", "false",
       "--model.tie_embeddings", "true", "--model.value_embeddings", "false", "--model.x0_shortcut", "false",
       "--model.logit_softcap", "none", "--train.optimizer", "adamw", "--train.lr", "2e-3"]

# row name -> the qkv overrides that turn the option on, after OFF
ROWS: dict[str, list[str]] = {
    "baseline": [],
    "relu2": ["--model.activation", "relu2"],
    "qk_norm": ["--model.qk_norm", "true"],
    "zero_init_proj": ["--model.zero_init_proj", "true"],
    "untied_head": ["--model.tie_embeddings", "false"],
    "value_embeddings": ["--model.value_embeddings", "true"],
    "x0_shortcut": ["--model.x0_shortcut", "true"],
    "logit_softcap": ["--model.logit_softcap", "15"],
    "muon": ["--train.optimizer", "muon"],
}


def run(base: str, overrides: list[str], seed: int, budget_s: float | None, steps: int | None,
        threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if steps:  # a fixed number of steps, the decay over them
        length = ["--train.max_steps", str(steps), "--train.decay_steps", str(steps)]
    else:  # a wall-clock budget, the decay over it
        length = ["--train.max_steps", "1000000", "--train.schedule_by", "time", "--train.max_minutes",
                  str(budget_s / 60)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "qkv", "train", "--config", base, "--out", str(out), "--no-sample",
               "--train.progress", "false", "--train.threads", str(threads), "--train.seed", str(seed), *length,
               "--train.eval_interval", "1000000", "--train.eval_iters", "0", *overrides]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "loss" in r]
    final = [r for r in recs if "val_loss" in r][-1]
    return {"val_loss": final["val_loss"], "steps": train[-1]["step"],
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="src/qkv/presets/shakespeare-char-speedrun.toml")
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--steps", type=int, help="a fixed number of steps instead of the wall-clock budget")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", help=f"rows to run (default: all); known: {', '.join(ROWS)}, combined")
    ap.add_argument("--combined", nargs="+", default=[],
                    help="row names whose overrides together make the 'combined' row (e.g. relu2 qk_norm muon)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="overrides added to every row (e.g. --extra --train.lr 3e-3); must come last")
    args = ap.parse_args()

    rows = dict(ROWS)
    if args.combined:
        unknown = [n for n in args.combined if n not in ROWS]
        if unknown:
            sys.exit(f"--combined: unknown row {unknown[0]!r}; known: {', '.join(ROWS)}")
        rows["combined"] = [x for n in args.combined for x in ROWS[n]]
    rows["speedrun"] = None  # the base config as it is: every option it turns on, at its own learning rate
    names = args.only or list(rows)
    unknown = [n for n in names if n not in rows]
    if unknown:
        sys.exit(f"--only: unknown row {unknown[0]!r}; known: {', '.join(rows)}")

    print(describe(args.threads), flush=True)
    length = f"{args.steps} steps" if args.steps else f"budget {args.budget_s:g} s"
    print(f"base {args.base}, {length} per run (decay over it), seeds {args.seeds}"
          + (f", extra {' '.join(args.extra)}" if args.extra else "")
          + (f", combined = {' + '.join(args.combined)}" if args.combined else ""), flush=True)
    results: dict[str, list[dict]] = {}
    for name in names:
        for seed in args.seeds:
            overrides = [*OFF, *rows[name]] if rows[name] is not None else []
            r = run(args.base, [*overrides, *args.extra], seed, args.budget_s, args.steps, args.threads)
            results.setdefault(name, []).append(r)
            print(f"  {name} seed {seed}: val {r['val_loss']:.4f}, {r['steps']} steps, "
                  f"{r['tokens_per_s']:,.0f} tokens/s", flush=True)

    base_mean = statistics.mean(r["val_loss"] for r in results["baseline"]) if "baseline" in results else None
    print("\n| option | full-pass val loss | vs baseline | steps | tokens/s |")
    print("|---|---|---|---|---|")
    for name, rs in results.items():
        losses = [r["val_loss"] for r in rs]
        mean, spread = statistics.mean(losses), (max(losses) - min(losses)) / 2
        delta = f"{mean - base_mean:+.4f}" if base_mean is not None and name != "baseline" else "—"
        print(f"| {name} | {mean:.4f} ± {spread:.4f} | {delta} | {statistics.mean(r['steps'] for r in rs):,.0f} "
              f"| {statistics.mean(r['tokens_per_s'] for r in rs):,.0f} |")


if __name__ == "__main__":
    main()
