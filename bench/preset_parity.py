"""Every shipped preset for a fixed number of steps, to prove a refactoring changed nothing.

    QKV_DATA_DIR=../shared/data python bench/preset_parity.py run OUT_DIR [--steps 200] [--only NAME ...]
    python bench/preset_parity.py compare OUT_DIR_BEFORE OUT_DIR_AFTER

`run` trains each preset in src/qkv/presets/ for `--steps` optimizer steps (a minimum-risk-training preset starts
from the Multi30k preset trained the same way first) on one thread, with the learning-rate
schedule by steps (no wall-clock budget), an evaluation every steps/2, torch.compile off (its generated
kernels are not this repository's code) and the latent autoencoder phase cut to the same step count; the
preset's model, data, loss and precision are kept. It copies each run's metrics.jsonl to
OUT_DIR/<preset>.jsonl. `shakespeare-char` (nanoGPT's GPU recipe: batch 64 × 256 tokens) runs a tenth of the
steps with 5 sampled-eval batches, which keeps it to minutes on a CPU. `--only` names the presets to run (two
`run`s of disjoint halves into one OUT_DIR use two cores; each run is one thread, so the figures do not change).

`compare` prints, for each preset, whether every logged value is identical, ignoring the timing fields
(tokens/s, elapsed seconds), and the first difference otherwise; it exits 1 if any preset differs.
Run both halves on the same machine: the figures are exact only there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
TIMING = {"tokens_per_s", "elapsed_s", "eval_s", "seconds"}


def overrides(preset: Path, steps: int) -> list[str]:
    settings = tomllib.loads(preset.read_text(encoding="utf-8"))
    n = max(2, steps // 10) if preset.stem == "shakespeare-char" else steps
    out = ["--train.max_steps", str(n), "--train.schedule_by", "steps", "--train.max_minutes", "none",
           "--train.decay_steps", str(n), "--train.eval_interval", str(max(1, n // 2)),
           "--train.full_eval_interval", str(max(1, n // 2)), "--train.threads", "1", "--train.progress", "false",
           "--train.compile", "false"]
    if preset.stem == "shakespeare-char":
        out += ["--train.eval_iters", "5"]
    if "latent" in settings:
        out += ["--latent.steps", str(steps)]
    return out


def run(out_dir: Path, steps: int, only: list[str] | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    print(describe(1), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    presets = sorted((REPO / "src" / "qkv" / "presets").glob("*.toml"))
    unknown = sorted(set(only or ()) - {p.stem for p in presets})
    if unknown:
        sys.exit(f"unknown preset(s): {', '.join(unknown)}; the presets are: {', '.join(p.stem for p in presets)}")
    for preset in [p for p in presets if only is None or p.stem in only]:
        if (out_dir / f"{preset.stem}.jsonl").exists():  # a run cut short continues where it stopped
            print(f"{preset.stem}: already measured", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            extra = []
            if tomllib.loads(preset.read_text(encoding="utf-8")).get("train", {}).get("objective") == "mrt":
                # minimum risk training fine-tunes a trained run: the base preset, trained the same way, first
                base = Path(tmp) / "base"
                _train(preset.parent / "multi30k-de-en.toml", base, steps, env)
                extra = ["--init-from", str(base)]
            _train(preset, run_dir, steps, env, extra)
            shutil.copyfile(run_dir / "metrics.jsonl", out_dir / f"{preset.stem}.jsonl")
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        print(f"{preset.stem}: {len(lines)} metrics lines", flush=True)


def _train(preset: Path, run_dir: Path, steps: int, env: dict, extra: list[str] = ()) -> None:
    cmd = [sys.executable, "-m", "qkv", "train", "--config", str(preset), "--out", str(run_dir), "--no-sample",
           *overrides(preset, steps), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{preset.name} failed:\n{proc.stderr[-3000:]}")


def _records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in path.read_text().splitlines()]


def compare(a: Path, b: Path) -> int:
    names = sorted({p.name for p in a.glob("*.jsonl")} | {p.name for p in b.glob("*.jsonl")})
    bad = 0
    for name in names:
        if not (a / name).is_file() or not (b / name).is_file():
            print(f"{name}: only in {'the first' if (a / name).is_file() else 'the second'} folder")
            bad += 1
            continue
        ra, rb = _records(a / name), _records(b / name)
        diff = next(((i, x, y) for i, (x, y) in enumerate(zip(ra, rb, strict=False)) if x != y), None)
        if diff is None and len(ra) == len(rb):
            print(f"{name}: identical ({len(ra)} lines, timing fields aside)")
            continue
        bad += 1
        if diff is None:
            print(f"{name}: {len(ra)} vs {len(rb)} lines")
        else:
            i, x, y = diff
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            print(f"{name}: line {i + 1} differs in {', '.join(keys)}: {[x.get(k) for k in keys]} vs "
                  f"{[y.get(k) for k in keys]}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out_dir", type=Path)
    r.add_argument("--steps", type=int, default=200)
    r.add_argument("--only", nargs="+", metavar="NAME", help="run these presets alone (default: every preset)")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out_dir, args.steps, args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
