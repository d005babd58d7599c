"""Per-process peak memory of DDP and FSDP at 1, 2 and 4 processes, for a GPT of about 100M parameters.

    QKV_DATA_DIR=../shared/data python bench/memory.py [--worlds 1 2 4] [--steps 3] [--out /tmp/qkv-memory]

Each cell is one `torchrun --standalone --nproc_per_node=N -m qkv train` of a character-level GPT (d_model 768,
14 layers, 12 heads, 99M parameters, 64 tokens × 4 sequences a step, AdamW, fp32) for a few steps, with
``train.parallel`` = ddp or fsdp. The figure is what the trainer logs with its evaluation (`peak_mem_mb_per_rank`
in metrics.jsonl): each process's peak resident memory during the training steps (the high-water mark is reset
when the first step starts, so building the model and reading the data are not in it; the evaluation after the
last step is not either). On a GPU it would be `max_memory_allocated`.

Beside each measured figure: what the training state alone costs per process, 16 bytes a parameter (fp32
weights, gradients, Adam's two moments) under DDP, 16 / N under FSDP: the rest is Python, torch, the data,
DDP's gradient buckets and FSDP's gathered blocks, and activations. glibc's malloc is told to give large blocks
back to the system (MALLOC_MMAP_THRESHOLD_=131072), so that the resident size follows what torch holds.

The first line names the machine. Figures vary a little from run to run (the allocator); the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import describe

REPO = Path(__file__).resolve().parents[1]
MODEL = ["--model.d_model", "768", "--model.n_layers", "14", "--model.n_heads", "12", "--model.max_seq_len", "64",
         "--model.dropout", "0"]


def train_args(steps: int, parallel: str, out: Path, data: Path) -> list[str]:
    return ["train", "--preset", "shakespeare-char-cpu", "--data", str(data), "--data.max_chars", "200000",
            "--data.val_max_tokens", "256", *MODEL, "--train.batch_size", "4", "--train.max_steps", str(steps),
            "--train.eval_interval", str(steps), "--train.eval_iters", "1", "--train.warmup_steps", "1",
            "--train.max_minutes", "none", "--train.schedule_by", "steps", "--train.progress", "false",
            "--train.log_interval", "1", "--train.precision", "fp32", "--train.parallel", parallel, "--no-sample",
            "--out", str(out)]


def cell(world: int, parallel: str, steps: int, out: Path, data: Path) -> dict:
    run = out / f"{parallel}-{world}"
    shutil.rmtree(run, ignore_errors=True)  # a scratch folder: this cell's run of an earlier bench goes
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": str(max(1, os.cpu_count() // world)),
           "PYTHONUNBUFFERED": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={world}", "-m", "qkv", *train_args(steps, parallel,
                                                                                                 run, data)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{parallel} × {world} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "peak_mem_mb_per_rank" in r]
    params = int(next(x for x in proc.stdout.splitlines() if x.startswith("run dir:")).split("(")[1].split()[0]
                 .replace(",", ""))
    return {"world": world, "parallel": parallel, "per_rank": evals[-1]["peak_mem_mb_per_rank"], "params": params,
            "wall_s": wall, "ms_per_step": _ms_per_step(records)}


def _ms_per_step(records: list[dict]) -> float:
    steps = [r for r in records if "loss" in r and "elapsed_s" in r]
    if len(steps) < 2:
        return float("nan")
    return 1000 * (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / (steps[-1]["step"] - steps[0]["step"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("/tmp/qkv-memory"))
    args = p.parse_args()
    data_dir = Path(os.environ.get("QKV_DATA_DIR", REPO.parent / "shared" / "data"))
    data = data_dir / "tinyshakespeare" / "input.txt"
    if not data.is_file():
        raise SystemExit(f"no tinyshakespeare at {data}; set QKV_DATA_DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    print(describe())
    print(f"model: {' '.join(MODEL)}; batch 4 × 64 tokens; {args.steps} steps; fp32 AdamW")
    rows = []
    for world in args.worlds:
        for parallel in ("ddp", "fsdp"):
            r = cell(world, parallel, args.steps, args.out, data)
            rows.append(r)
            state = 16 * r["params"] / 2**20 / (world if parallel == "fsdp" else 1)
            print(f"{parallel:4s} × {world}: peak per process {max(r['per_rank']):,.0f} MiB "
                  f"(ranks: {', '.join(f'{x:,.0f}' for x in r['per_rank'])}); training state alone "
                  f"{state:,.0f} MiB; {r['ms_per_step']:,.0f} ms/step; command {r['wall_s']:.0f} s", flush=True)
    print(f"\nparameters: {rows[0]['params']:,}")
    print("| processes | DDP peak per process (MiB) | FSDP peak per process (MiB) | FSDP / DDP | "
          "state per process, DDP / FSDP (MiB) |")
    print("|---|---|---|---|---|")
    for world in args.worlds:
        d = next(r for r in rows if r["world"] == world and r["parallel"] == "ddp")
        f = next(r for r in rows if r["world"] == world and r["parallel"] == "fsdp")
        dm, fm = max(d["per_rank"]), max(f["per_rank"])
        state = 16 * d["params"] / 2**20
        print(f"| {world} | {dm:,.0f} | {fm:,.0f} | {fm / dm:.2f} | {state:,.0f} / {state / world:,.0f} |")


if __name__ == "__main__":
    main()
