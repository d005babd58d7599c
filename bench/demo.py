"""What `make demo` gives on this machine: its wall time, and whether its samples read as Python.

    python bench/demo.py OUT_DIR [--samples 10] [--fp32] [-- extra qkv train flags]

Runs the demo's own command (`qkv train --preset demo-pystdlib --out OUT_DIR/run`, the `make demo` target) and
times it whole — reading the standard library, tokenizing, training, the last evaluation and the sample. Then it
draws `--samples` continuations of the preset's prompt (``"\\ndef"``, its sampling settings, seeds 0, 1, ...) and
counts the ones whose first two lines are Python in two ways:

- *valid so far*: what Python's own interactive interpreter accepts (`codeop.compile_command`): the lines are a
  program, or the start of one that more lines could finish: ``def f(x):`` then a line that opens a docstring is
  valid so far, ``def f(x y):`` is not. This is the demo's promise ("recognisably Python").
- *whole*: the two lines alone parse with `ast`. Stricter than "recognisable": the stdlib's most common line after
  a ``def`` opens a docstring that the cut leaves unterminated, and a two-line cut of a long signature is never
  whole.

`--fp32` runs the training as a CPU without bf16 units would (``--train.precision fp32``): what the front page
promises must hold there.
"""

from __future__ import annotations

import argparse
import ast
import codeop
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

from machine import describe


def first_lines(text: str, n: int = 2) -> str:
    """The first `n` lines of `text`, after any newlines it starts with (the prompt's)."""
    return "\n".join(text.lstrip("\n").splitlines()[:n])


def whole(code: str) -> bool:
    """Whether `code` is a Python program as it stands."""
    try:
        ast.parse(code)
        return True
    except SyntaxError:
        return False


def valid_so_far(code: str) -> bool:
    """Whether Python's interactive interpreter accepts `code`: a program, or the start of one."""
    with warnings.catch_warnings():  # "invalid escape sequence" and the like are warnings, not errors
        warnings.simplefilter("ignore")
        try:
            codeop.compile_command(code, symbol="exec")
            return True
        except (SyntaxError, ValueError, OverflowError):
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
    counts = {"valid so far": 0, "whole": 0}
    for seed in range(args.samples):
        head = first_lines(lm.config.sample.prompt + lm.generate(seed=seed))
        checks = {"valid so far": valid_so_far(head), "whole": whole(head)}
        for name, ok in checks.items():
            counts[name] += ok
        verdict = "whole" if checks["whole"] else "valid so far" if checks["valid so far"] else "not Python"
        print(f"seed {seed}: {verdict:<12} | {head.replace(chr(10), ' ⏎ ')[:100]}")
    print(f"first two lines of {args.samples} samples: {counts['valid so far']} valid Python so far (the "
          f"interpreter's codeop), {counts['whole']} whole programs (ast)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
