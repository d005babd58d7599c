"""Train a preset by the clock in a child process and read back its `qkv eval --json`, for the benches that
measure what a time-budgeted preset learns (bench/qa.py, bench/summarize.py).

A run directory that already holds weights is not trained again (a bench can be re-run for its tables).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def train(run: Path, preset: str, minutes: float, threads: int, extra: list[str] = ()) -> float | None:
    """`qkv train --preset` into `run` for `minutes` on `threads` threads (log: run + ".log"); its wall time, or None
    when `run` was already trained. Exits the bench, naming the log, if training fails."""
    if (run / "model.safetensors").exists():
        return None
    log = run.with_name(run.name + ".log")
    cmd = [sys.executable, "-m", "qkv", "train", "--preset", preset, "--out", str(run), "--no-sample",
           "--train.progress", "false", "--train.threads", str(threads), "--train.max_minutes", str(minutes), *extra]
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), stdout=f,
                            stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"{run.name}: training failed, see {log}")
    return time.perf_counter() - t


def evaluate(run: Path, threads: int, *flags: str) -> dict:
    """`qkv eval RUN --json` with `flags`, on `threads` threads."""
    ev = subprocess.run([sys.executable, "-m", "qkv", "eval", str(run), "--json", *flags],
                        env=dict(os.environ, OMP_NUM_THREADS=str(threads)), capture_output=True, text=True)
    if ev.returncode:
        sys.exit(f"{run.name}: eval failed:\n{ev.stderr[-2000:]}")
    return json.loads(ev.stdout)


def updates(run: Path) -> int:
    """The optimizer steps the run made (its metrics.jsonl)."""
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return max((m.get("step", 0) for m in metrics), default=0)
