"""``qkv train --config configs/NAME.toml [--out RUN_DIR] [--data SRC] [--section.key VALUE ...]``."""

from __future__ import annotations

import sys
from pathlib import Path

from qkv.config import from_dict, load_toml, merge, parse_overrides, to_dict
from qkv.errors import QKVError

ACCEPTS_OVERRIDES = True

# settings that may change when a run is resumed; anything else must match the run's config
RESUME_MAY_CHANGE = {"train.max_steps", "train.max_minutes", "train.progress", "train.device", "train.threads",
                     "train.compile", "sample"}


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a model from a TOML config",
                       description="Train a model. Any setting can be overridden: --train.max_steps 200 "
                                   "--model.n_layers 4 (see the config files in configs/).")
    p.add_argument("--config", help="TOML config (a preset from configs/ or your own)")
    p.add_argument("--out", help="run directory to create (default: runs/<config name>)")
    p.add_argument("--data", help="dataset name or a path to a text file/folder (sets data.source)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from another run's weights and tokenizer")
    p.add_argument("--no-sample", action="store_true", help="don't print a sample when training ends")


def _diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = prefix + k
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, key + ".")
        elif va != vb:
            out.append((key, va, vb))
    return out


def resolve_config(args) -> tuple[dict, Path, bool]:
    """The run config dict (not yet validated), the run dir, and whether vocab_size was given."""
    overrides = parse_overrides(args.overrides)
    if args.data:
        overrides = merge(overrides, {"data": {"source": args.data}})
    if args.resume:
        from qkv.models.io import read_run_config

        run_dir = Path(args.resume)
        saved = read_run_config(run_dir)
        base = {k: saved[k] for k in ("task", "model", "data", "train", "sample") if k in saved}
        wanted = merge(base, load_toml(args.config)) if args.config else base
        wanted = merge(wanted, overrides)
        from qkv.recipes.lm import LMRunConfig

        normalized = to_dict(from_dict(LMRunConfig, wanted))
        for key, old, new in _diff(base, normalized):
            if key not in RESUME_MAY_CHANGE and key.split(".")[0] not in RESUME_MAY_CHANGE:
                raise QKVError(f"--resume: {key} is {new!r} but the run was trained with {old!r}; "
                               "resume needs the same config (or start a new run with --out)")
        return normalized, run_dir, True
    if not args.config:
        raise QKVError("--config is required (e.g. --config configs/shakespeare-char-cpu.toml), or --resume RUN_DIR")
    cfg = merge(load_toml(args.config), overrides)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    return cfg, run_dir, "vocab_size" in cfg.get("model", {})


def run(args) -> int:
    cfg_dict, run_dir, vocab_given = resolve_config(args)
    task = cfg_dict.get("task", "lm")
    if task != "lm":
        raise QKVError(f"unknown task {task!r}; valid: lm")
    from qkv.recipes.lm import LMRunConfig, train_lm

    cfg = from_dict(LMRunConfig, cfg_dict)
    if not args.resume and (run_dir / "model.safetensors").exists():
        raise QKVError(f"{run_dir} already holds a trained model; use --resume {run_dir} or choose another --out")
    result, model, tok, is_main = train_lm(cfg, run_dir, resume=bool(args.resume), fit_vocab=not vocab_given,
                                           init_from=Path(args.init_from) if args.init_from else None)
    if not is_main:
        return 0
    from qkv.training.plots import plot_losses

    plot = plot_losses(run_dir)
    n = model.num_params()
    last = next((e for e in reversed(result.evals) if "val_loss" in e), None)
    print(f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})")
    if last:
        print(f"val loss {last['val_loss']:.4f} (full pass) | ppl {last['val_ppl']:.2f} | "
              f"{last['val_bpc']:.3f} bits/char")
    if not args.no_sample:
        from qkv.generation.lm import stream_text
        from qkv.generation.sampling import SamplingConfig

        s = cfg.sample
        print("--- sample " + "-" * 60)
        model.eval()
        for piece in stream_text(model, tok, s.prompt, s.max_new_tokens,
                                 SamplingConfig(s.temperature, s.top_k, s.top_p), seed=s.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print("\n" + "-" * 71)
    print(f"run dir: {run_dir}  ({n:,} parameters)")
    print(f"  weights: {run_dir / 'model.safetensors'}")
    print(f"  metrics: {run_dir / 'metrics.jsonl'}")
    if plot:
        print(f"  plot:    {plot}")
    print(f"generate more: qkv generate {run_dir} --prompt \"...\"")
    return 0
