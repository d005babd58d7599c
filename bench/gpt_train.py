"""Training speed and quality on tinyshakespeare (char): qkv, and nanoGPT's own code back to back.

    QKV_DATA_DIR=../shared/data python bench/gpt_train.py [--preset shakespeare-char-cpu]
        [--runs 3] [--threads 2] [--nanogpt ../shared/peers/nanoGPT]

Each qkv run is `qkv train --config CONFIG` in a fresh process. Reported per run: median ms/iter (from
metrics.jsonl, 10-step windows), tokens/s, full-pass validation loss at the end, nanoGPT-style sampled
validation loss, wall time of the whole command, and peak RSS.

With --nanogpt PATH (an unmodified nanoGPT checkout, e.g. ../shared/peers/nanoGPT), the bench copies it
to a scratch folder, gives its data/shakespeare_char/prepare.py the same tinyshakespeare file from
QKV_DATA_DIR (so nothing is downloaded), and runs nanoGPT's README CPU recipe before each qkv run, in this
command, on this machine. The ratios printed at the end are qkv / nanoGPT from those runs. Without it,
only qkv's figures are printed: a figure recorded on another machine is no reference.

The first line of the output names the machine (CPU model, bf16 units, vector flags, threads).

The CPU speedrun, back to back with nanoGPT:

    QKV_DATA_DIR=../shared/data python bench/gpt_train.py --speedrun --nanogpt ../shared/peers/nanoGPT

runs nanoGPT's README CPU recipe (its own code, 2,000 steps), then `src/qkv/presets/shakespeare-char-speedrun.toml`
with its time budget set to nanoGPT's measured wall time less 10 s (startup and the last evaluation). The
bench watches qkv's metrics.jsonl while it trains, so every full-pass evaluation gets the wall time since the
qkv process started — imports, data, training and every evaluation before it included. Printed: nanoGPT's
wall time for its 2,000 steps; qkv's wall time to the first full-pass val loss ≤ 1.88 (and its training time
alone, evaluations left out, beside), the ratio of the two walls (target ≤ 0.35), and the best full-pass val
loss qkv reached within nanoGPT's wall time (target ≤ 1.60).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe, matmul_peak

SPEEDRUN_CONFIG = "src/qkv/presets/shakespeare-char-speedrun.toml"
SPEEDRUN_TARGET = 1.88  # full-pass val loss: about where nanoGPT's CPU recipe ends (qkv measures 1.91 there)
NANOGPT_CMD = ("train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 "
               "--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 "
               "--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0")


def run_timed(cmd: list[str], env: dict, cwd: str | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of this child in MB, stdout+stderr) of one command.

    The peak RSS is the child's own (os.wait4), not the maximum over every child this bench has run."""
    with tempfile.TemporaryFile("w+") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out


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


def prepare_nanogpt(checkout: str, scratch: Path) -> Path:
    """A scratch copy of a nanoGPT checkout with data/shakespeare_char prepared from QKV_DATA_DIR's file."""
    src = Path(checkout)
    if not (src / "train.py").is_file() or not (src / "data" / "shakespeare_char" / "prepare.py").is_file():
        sys.exit(f"--nanogpt {checkout}: not a nanoGPT checkout (no train.py / data/shakespeare_char/prepare.py)")
    data = Path(os.environ.get("QKV_DATA_DIR", "../shared/data")) / "tinyshakespeare" / "input.txt"
    if not data.is_file():
        sys.exit(f"{data} not found; set QKV_DATA_DIR to the folder holding tinyshakespeare/input.txt")
    dst = scratch / "nanoGPT"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("out*", "*.bin", "*.pkl", "__pycache__"))
    shutil.copyfile(data, dst / "data" / "shakespeare_char" / "input.txt")  # prepare.py downloads it otherwise
    subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=dst, check=True, capture_output=True)
    return dst


def nanogpt_run(path: Path, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    shutil.rmtree(path / "out-shakespeare-char", ignore_errors=True)
    wall, rss, out = run_timed([sys.executable, *NANOGPT_CMD.split()], env, cwd=str(path))
    times = [float(m) for m in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", out)]
    vals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", out)
    return {"ms_per_iter": statistics.median(times[1:]), "val_loss_sampled": float(vals[-1][2]),
            "steps": len(times), "wall_s": wall, "peak_rss_mb": rss}


def qkv_speedrun(threads: int, budget_s: float, extra: list[str]) -> dict:
    """Train the speedrun preset for `budget_s` of training clock; each evaluation's wall time since launch."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        metrics = out / "metrics.jsonl"
        cmd = [sys.executable, "-m", "qkv", "train", "--config", SPEEDRUN_CONFIG, "--out", str(out), "--no-sample",
               "--train.progress", "false", "--train.threads", str(threads),
               "--train.max_minutes", f"{budget_s / 60:.4f}", *extra]
        seen, evals = 0, []
        with tempfile.TemporaryFile("w+") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            while True:  # poll the metrics file: an evaluation line's arrival time is its wall time
                done = proc.poll() is not None
                if metrics.exists():
                    lines = metrics.read_text().splitlines()
                    now = time.perf_counter() - t0
                    for line in lines[seen:]:
                        if line.endswith("}"):
                            rec = json.loads(line)
                            if "val_loss" in rec:
                                evals.append({**rec, "wall_s": now})
                            seen += 1
                if done:
                    break
                time.sleep(0.05)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                log.seek(0)
                sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{log.read()[-2000:]}")
        train = [json.loads(x) for x in metrics.read_text().splitlines()]
        flops = flops_per_token(out)
    train = [r for r in train if "loss" in r]
    spent = 0.0
    for r in evals:  # the training clock without the evaluations so far
        spent += r["eval_s"]
        r["train_only_s"] = r["elapsed_s"] - spent
    return {"evals": evals, "wall_s": wall, "steps": train[-1]["step"], "flops_per_token": flops,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train)}


def flops_per_token(run_dir: Path) -> float:
    """Training FLOPs per token of a saved GPT run: 6N + 6·L·T·d (Kaplan et al. 2020: the weights' forward and
    backward, plus the attention scores over the context), N the non-embedding parameters."""
    from qkv.models.io import load_model

    model, _ = load_model(run_dir)
    c = model.config
    return 6 * model.num_params(non_embedding=True) + 6 * c.n_layers * c.max_seq_len * c.d_model


def speedrun(args, extra: list[str]) -> None:
    if not args.nanogpt:
        sys.exit("--speedrun needs --nanogpt PATH (e.g. ../shared/peers/nanoGPT): its wall time is the reference")
    print(describe(args.threads), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        nano = prepare_nanogpt(args.nanogpt, Path(scratch))
        n = nanogpt_run(nano, args.threads)
    print(f"nanoGPT CPU recipe: 2,000 steps in {n['wall_s']:.1f} s wall ({n['ms_per_iter']:.1f} ms/iter median), "
          f"sampled val loss {n['val_loss_sampled']:.4f}", flush=True)
    q = qkv_speedrun(args.threads, max(10.0, n["wall_s"] - 10.0), extra)
    print(f"qkv {SPEEDRUN_CONFIG}: {q['steps']:,} steps, {q['tokens_per_s']:,.0f} tokens/s, {q['wall_s']:.1f} s wall")
    for r in q["evals"]:
        print(f"  step {r['step']:>5}: full-pass val {r['val_loss']:.4f} at {r['wall_s']:6.1f} s wall "
              f"({r['train_only_s']:.1f} s training, {r['elapsed_s'] - r['train_only_s']:.1f} s evaluating)")
    hit = next((r for r in q["evals"] if r["val_loss"] <= SPEEDRUN_TARGET), None)
    within = [r for r in q["evals"] if r["wall_s"] <= n["wall_s"]]
    if hit is None:
        print(f"qkv never reached full-pass val {SPEEDRUN_TARGET}: no time to report")
    else:
        print(f"time to full-pass val <= {SPEEDRUN_TARGET}: qkv {hit['wall_s']:.1f} s wall "
              f"({hit['train_only_s']:.1f} s of training) vs nanoGPT's {n['wall_s']:.1f} s: "
              f"{hit['wall_s'] / n['wall_s']:.2f}x wall, {hit['train_only_s'] / n['wall_s']:.2f}x training only "
              "(target <= 0.35x)")
    if within:
        best = min(within, key=lambda r: r["val_loss"])
        print(f"best full-pass val within nanoGPT's wall time: {best['val_loss']:.4f} at step {best['step']} "
              f"({best['wall_s']:.1f} s) (target <= 1.60)")
    import torch

    torch.set_num_threads(args.threads)
    peak = matmul_peak()
    achieved = q["flops_per_token"] * q["tokens_per_s"] / 1e9
    print(f"what limits it: qkv trains at {achieved:.1f} GFLOP/s ({q['flops_per_token'] / 1e6:.2f} MFLOP/token x "
          f"{q['tokens_per_s']:,.0f} tokens/s), {achieved / peak:.0%} of this machine's fp32 matmul peak measured "
          f"now ({peak:.1f} GFLOP/s, 2048x768 @ 768x3072)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="src/qkv/presets/shakespeare-char-cpu.toml")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nanogpt", help="path to a nanoGPT checkout, to measure the reference in the same session")
    ap.add_argument("--speedrun", action="store_true",
                    help=f"nanoGPT's CPU recipe, then {SPEEDRUN_CONFIG}: time to val {SPEEDRUN_TARGET} "
                    "(needs --nanogpt)")
    ap.add_argument("overrides", nargs="*", help="extra qkv overrides, e.g. --train.seed 1")
    args, unknown = ap.parse_known_args()
    extra = args.overrides + unknown
    if args.speedrun:
        speedrun(args, extra)
        return

    print(describe(args.threads), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        nano = prepare_nanogpt(args.nanogpt, Path(scratch)) if args.nanogpt else None
        for i in range(args.runs):
            if nano is not None:
                r = nanogpt_run(nano, args.threads)
                rows.append(("nanoGPT", r))
                print(f"nanoGPT run {i + 1}: " + _fmt(r), flush=True)
            r = qkv_run(args.config, args.threads, extra)
            rows.append(("qkv", r))
            print(f"qkv run {i + 1}: " + _fmt(r), flush=True)

    q = [r for name, r in rows if name == "qkv"]
    n = [r for name, r in rows if name == "nanoGPT"]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print(f"\nqkv ({args.config}, {args.threads} threads, {len(q)} run(s), medians):")
    print(f"  {med(q, 'ms_per_iter'):.1f} ms/iter, {med(q, 'tokens_per_s'):,.0f} tokens/s, "
          f"wall {med(q, 'wall_s'):.1f} s (training loop {med(q, 'train_s'):.1f} s), "
          f"peak RSS {med(q, 'peak_rss_mb'):.0f} MB")
    print(f"  full-pass val loss {med(q, 'val_loss'):.4f}  (sampled estimate {med(q, 'val_loss_sampled'):.4f})")
    if not n:
        print("no nanoGPT run (--nanogpt PATH runs it back to back); no ratios")
        return
    print(f"nanoGPT ({NANOGPT_CMD.split()[1]} CPU recipe, {args.threads} threads, {len(n)} run(s), medians):")
    print(f"  {med(n, 'ms_per_iter'):.1f} ms/iter, wall {med(n, 'wall_s'):.1f} s, "
          f"peak RSS {med(n, 'peak_rss_mb'):.0f} MB, sampled val loss {med(n, 'val_loss_sampled'):.4f}")
    print("ratios qkv / nanoGPT, both measured in this run on this machine:")
    print(f"  ms/iter {med(q, 'ms_per_iter') / med(n, 'ms_per_iter'):.2f}x  "
          f"wall {med(q, 'wall_s') / med(n, 'wall_s'):.2f}x  "
          f"peak RSS {med(q, 'peak_rss_mb') / med(n, 'peak_rss_mb'):.2f}x")


def _fmt(r: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())


if __name__ == "__main__":
    main()
