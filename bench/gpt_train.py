"""Training speed and quality on tinyshakespeare (char), qkv vs nanoGPT's CPU recipe.

    python bench/gpt_train.py [--config configs/shakespeare-char-cpu.toml] [--runs 3] [--threads 2]
                              [--nanogpt PATH_TO_NANOGPT_CHECKOUT]

Each run is `qkv train --config CONFIG` in a fresh process (QKV_DATA_DIR must point at the data). Reported
per run: median ms/iter (from metrics.jsonl, 10-step windows), tokens/s, full-pass validation loss at the
end, nanoGPT-style sampled validation loss, wall time of the whole command, and peak RSS.

With --nanogpt, nanoGPT's own train.py runs back to back with its README CPU command (prepare.py must have
been run in data/shakespeare_char), and the ratios are computed against those runs. Without it, the ratios
use the reference figures recorded for the issue (on another machine) (nanoGPT median 62.9 ms/iter, wall
2 min 19 s – 2 min 43 s, peak RSS ≈ 363 MB), labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NANOGPT_CMD = ("train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 "
               "--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 "
               "--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0")
REFERENCE = {"ms_per_iter": 62.9, "wall_s": (139.0, 163.0), "peak_rss_mb": 363.0, "val_loss_sampled": 1.8857}


def run_timed(cmd: list[str], env: dict, cwd: str | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the child in MB, stdout+stderr) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(rss, before) / 1024, proc.stdout + proc.stderr


def qkv_run(config: str, threads: int, extra: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "qkv", "train", "--config", config, "--out", str(out), "--no-sample",
               "--train.progress", "false", "--train.threads", str(threads), *extra]
        wall, rss, _ = run_timed(cmd, env)
        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "loss" in r]
    evals = [r for r in recs if "val_loss" in r or "val_loss_sampled" in r]
    per_iter = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) * 1000
                for a, b in zip(train, train[1:], strict=False)]
    last = evals[-1]
    tps = statistics.median(r["tokens_per_s"] for r in train)
    return {"ms_per_iter": statistics.median(per_iter), "tokens_per_s": tps,
            "val_loss": last.get("val_loss"), "val_loss_sampled": last.get("val_loss_sampled"),
            "steps": train[-1]["step"], "train_s": train[-1]["elapsed_s"], "wall_s": wall, "peak_rss_mb": rss}


def nanogpt_run(path: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    wall, rss, out = run_timed([sys.executable, *NANOGPT_CMD.split()], env, cwd=path)
    times = [float(m) for m in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", out)]
    vals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", out)
    return {"ms_per_iter": statistics.median(times[1:]), "val_loss_sampled": float(vals[-1][2]),
            "wall_s": wall, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/shakespeare-char-cpu.toml")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nanogpt", help="path to a nanoGPT checkout, to measure the reference in the same session")
    ap.add_argument("overrides", nargs="*", help="extra qkv overrides, e.g. --train.seed 1")
    args, unknown = ap.parse_known_args()
    extra = args.overrides + unknown

    rows = []
    for i in range(args.runs):
        if args.nanogpt:
            r = nanogpt_run(args.nanogpt, args.threads)
            rows.append(("nanoGPT", r))
            print(f"nanoGPT run {i + 1}: {r}", flush=True)
        r = qkv_run(args.config, args.threads, extra)
        rows.append(("qkv", r))
        print(f"qkv run {i + 1}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in r.items()), flush=True)

    q = [r for name, r in rows if name == "qkv"]
    n = [r for name, r in rows if name == "nanoGPT"]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print(f"\nqkv ({args.config}, {args.threads} threads, {len(q)} run(s), medians):")
    print(f"  {med(q, 'ms_per_iter'):.1f} ms/iter, {med(q, 'tokens_per_s'):,.0f} tokens/s, "
          f"wall {med(q, 'wall_s'):.1f} s (training loop {med(q, 'train_s'):.1f} s), "
          f"peak RSS {med(q, 'peak_rss_mb'):.0f} MB")
    print(f"  full-pass val loss {med(q, 'val_loss'):.4f}  (sampled estimate {med(q, 'val_loss_sampled'):.4f})")
    if n:
        ref_ms, ref_wall, ref_rss, label = med(n, "ms_per_iter"), med(n, "wall_s"), med(n, "peak_rss_mb"), \
            "nanoGPT measured in this run"
    else:
        ref_ms, ref_wall, ref_rss = REFERENCE["ms_per_iter"], sum(REFERENCE["wall_s"]) / 2, REFERENCE["peak_rss_mb"]
        label = "nanoGPT figures recorded for the issue on another machine (not re-measured here)"
    print(f"ratios vs {label}:")
    print(f"  ms/iter {med(q, 'ms_per_iter') / ref_ms:.2f}x  wall {med(q, 'wall_s') / ref_wall:.2f}x  "
          f"peak RSS {med(q, 'peak_rss_mb') / ref_rss:.2f}x")


if __name__ == "__main__":
    main()
