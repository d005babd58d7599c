"""What `make demo` gives on this machine: its wall time, and whether its samples read as Python.

    python bench/demo.py OUT_DIR [--samples 10] [--fp32] [-- extra qkv train flags]

Runs the demo's own command (`qkv train --preset demo-pystdlib --out OUT_DIR/run`, the `make demo` target) and
times it whole — reading the standard library, tokenizing, training, the last evaluation and the sample. Then it
draws `--samples` continuations of the preset's prompt (``def ``, its sampling settings, seeds 0, 1, ...) and
counts the ones whose first two lines parse with `ast` ("recognisably Python": ``def f(x):`` with its first body
line, a whole one-line statement). `--fp32` runs the training as a CPU without bf16 units would
(``--train.precision fp32``): what the front page promises must hold there.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import describe


def first_lines_parse(text: str, n: int = 2) -> bool:
    """Whether the first `n` lines of `text`, as written, are a Python program."""
    try:
        ast.parse("\n".join(text.splitlines()[:n]))
        return True
    except SyntaxError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--fp32", action="store_true", help="train as a CPU without bf16 units does")
    args, extra = ap.parse_known_args()
    print(describe(), flush=True)
    run = args.out_dir / "run"
    cmd = [sys.executable, "-m", "qkv", "train", "--preset", "demo-pystdlib", "--out", str(run),
           "--train.progress", "false", *(["--train.precision", "fp32"] if args.fp32 else []),
           *[a for a in extra if a != "--"]]
    print("$ " + " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = next(m for m in reversed(metrics) if "val_loss" in m)
    print(f"wall {wall:.1f} s for the whole command; {metrics[-1]['step']} steps; training clock "
          f"{metrics[-1]['elapsed_s']:.1f} s; full-pass val loss {last['val_loss']:.4f}", flush=True)

    import qkv

    lm = qkv.load_run(run)
    good = 0
    for seed in range(args.samples):
        text = lm.config.sample.prompt + lm.generate(seed=seed)
        ok = first_lines_parse(text)
        good += ok
        head = " ⏎ ".join(text.splitlines()[:2])
        print(f"seed {seed}: {'parses ' if ok else 'does not'} | {head[:100]}")
    print(f"{good} of {args.samples} samples: the first two lines parse with ast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
