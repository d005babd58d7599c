"""``qkv train --config configs/NAME.toml [--out RUN_DIR] [--data SRC] [--section.key VALUE ...]``.

The config's ``task`` picks the recipe: ``"lm"`` (the default) trains a GPT (`qkv.recipes.lm`),
``"translate"`` an encoder–decoder (`qkv.recipes.translate`), ``"chat"`` fine-tunes a GPT on conversations
(`qkv.recipes.chat`), ``"diffusion"`` a DiT image denoiser (`qkv.recipes.diffusion`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qkv.config import from_dict, load_toml, merge, parse_overrides, to_dict
from qkv.errors import QKVError

ACCEPTS_OVERRIDES = True

# settings that may change when a run is resumed; anything else must match the run's config
RESUME_MAY_CHANGE = {"train.max_steps", "train.max_minutes", "train.progress", "train.device", "train.threads",
                     "train.compile", "sample", "decode"}

TASKS = ("lm", "translate", "chat", "diffusion")


def run_config_class(task: str):
    """The run-config dataclass of a task."""
    if task == "lm":
        from qkv.recipes.lm import LMRunConfig

        return LMRunConfig
    if task == "translate":
        from qkv.recipes.translate import TranslateRunConfig

        return TranslateRunConfig
    if task == "chat":
        from qkv.recipes.chat import ChatRunConfig

        return ChatRunConfig
    if task == "diffusion":
        from qkv.recipes.diffusion import DiffusionRunConfig

        return DiffusionRunConfig
    raise QKVError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a model from a TOML config",
                       description="Train a model. Any setting can be overridden: --train.max_steps 200 "
                                   "--model.n_layers 4 (see the config files in configs/).")
    p.add_argument("--config", help="TOML config (a preset from configs/ or your own)")
    p.add_argument("--out", help="run directory to create (default: runs/<config name>)")
    p.add_argument("--data", help="dataset name or a path to a text file/folder (sets data.source; for "
                                  "translate, data.dataset)")
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


def _with_data(overrides: dict, data: str | None, task: str) -> dict:
    """Apply ``--data``: data.source for the lm task, data.dataset for translate."""
    if not data:
        return overrides
    return merge(overrides, {"data": {"dataset" if task == "translate" else "source": data}})


def resolve_config(args) -> tuple[dict, Path, bool]:
    """The run config dict (not yet validated), the run dir, and whether vocab_size was given."""
    overrides = parse_overrides(args.overrides)
    if args.resume:
        from qkv.models.io import read_run_config

        run_dir = Path(args.resume)
        saved = read_run_config(run_dir)
        base = {k: saved[k] for k in ("task", "model", "data", "train", "sample", "decode", "diffusion", "latent")
                if k in saved}
        wanted = merge(base, load_toml(args.config)) if args.config else base
        wanted = merge(wanted, _with_data(overrides, args.data, wanted.get("task", "lm")))
        cls = run_config_class(wanted.get("task", "lm"))
        normalized = to_dict(from_dict(cls, wanted))
        # compare against the saved config with defaults filled in: a section or field added to qkv after
        # the run was saved (e.g. [latent]) is not a change
        for key, old, new in _diff(to_dict(from_dict(cls, base)), normalized):
            if key not in RESUME_MAY_CHANGE and key.split(".")[0] not in RESUME_MAY_CHANGE:
                raise QKVError(f"--resume: {key} is {new!r} but the run was trained with {old!r}; "
                               "resume needs the same config (or start a new run with --out)")
        return normalized, run_dir, True
    if not args.config:
        raise QKVError("--config is required (e.g. --config configs/shakespeare-char-cpu.toml), or --resume RUN_DIR")
    cfg = load_toml(args.config)
    cfg = merge(cfg, _with_data(overrides, args.data, cfg.get("task", "lm")))
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    return cfg, run_dir, "vocab_size" in cfg.get("model", {})


def run(args) -> int:
    cfg_dict, run_dir, vocab_given = resolve_config(args)
    task = cfg_dict.get("task", "lm")
    cfg = from_dict(run_config_class(task), cfg_dict)
    if not args.resume and (run_dir / "model.safetensors").exists():
        raise QKVError(f"{run_dir} already holds a trained model; use --resume {run_dir} or choose another --out")
    if task == "translate":
        return _run_translate(args, cfg, run_dir)
    if task == "diffusion":
        return _run_diffusion(args, cfg, run_dir)
    if task == "chat":
        return _run_chat(args, cfg, run_dir, vocab_given)
    from qkv.recipes.lm import train_lm

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
        sys.stdout.write(s.prompt)
        for piece in stream_text(model, tok, s.prompt, s.max_new_tokens,
                                 SamplingConfig(s.temperature, s.top_k, s.top_p), seed=s.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print("\n" + "-" * 71)
    _print_run_files(run_dir, n, plot, f"generate more: qkv generate {run_dir} --prompt \"...\"")
    return 0


def _run_translate(args, cfg, run_dir: Path) -> int:
    from qkv.recipes.translate import train_translate
    from qkv.training.plots import plot_losses

    if args.init_from:
        raise QKVError("--init-from is only supported for the lm and chat tasks")
    result, model, (src_tok, tgt_tok), is_main = train_translate(cfg, run_dir, resume=bool(args.resume))
    if not is_main:
        return 0
    plot = plot_losses(run_dir)
    last = next((e for e in reversed(result.evals) if "val_loss" in e), None)
    bleu = next((e for e in reversed(result.evals) if "val_bleu" in e), None)
    print(f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})")
    if last:
        print(f"val loss {last['val_loss']:.4f} (NLL per target token) | ppl {last['val_ppl']:.2f}")
    if bleu:
        print(f"val BLEU {bleu['val_bleu']:.2f} | chrF++ {bleu['val_chrf++']:.2f} "
              f"(sacreBLEU, greedy, first {cfg.data.bleu_val_pairs} validation sentences)")
    if not args.no_sample:
        from qkv.data.translation import load_split
        from qkv.recipes.translate import translate_lines

        src, ref, _ = load_split(cfg.data, "val")
        hyps, _ = translate_lines(model, src_tok, tgt_tok, src[:3], cfg.decode)
        print("--- sample translations (validation) " + "-" * 34)
        for s, r, h in zip(src[:3], ref[:3], hyps, strict=True):
            print(f"src: {s}\nref: {r}\nout: {h}\n")
        print("-" * 71)
    _print_run_files(run_dir, model.num_params(), plot,
                     f"translate: qkv translate {run_dir} --beam {cfg.decode.beam} < sentences.txt")
    return 0


def _run_chat(args, cfg, run_dir: Path, vocab_given: bool) -> int:
    from qkv.recipes.chat import em_metrics, train_chat
    from qkv.training.plots import plot_losses

    init_from = Path(args.init_from) if args.init_from and not args.resume else None
    result, model, tok, test_convs, is_main = train_chat(cfg, run_dir, resume=bool(args.resume),
                                                         init_from=init_from, fit_vocab=not vocab_given)
    if not is_main:
        return 0
    plot = plot_losses(run_dir)
    last = next((e for e in reversed(result.evals) if "val_loss" in e), None)
    print(f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})")
    if last:
        print(f"val answer loss {last['val_loss']:.4f} (NLL per assistant token) | ppl {last['val_ppl']:.3f}")
    if test_convs:
        em = em_metrics(model, tok, test_convs, "test")
        shown = " | ".join(f"{k.split('_')[-1]} {v:.1%}" for k, v in em.items())
        print(f"test exact match ({len(test_convs)} unseen conversations, greedy): {shown}")
    if not args.no_sample and test_convs:
        from qkv.chat.session import greedy_reply

        print("--- sample replies (test questions) " + "-" * 35)
        for conv in test_convs[:3]:
            k = next(i for i, m in enumerate(conv.messages) if m["role"] == "assistant")
            reply = greedy_reply(model, tok, conv.messages[:k], cfg.sample.max_new_tokens)
            print(f"user: {conv.messages[k - 1]['content']}\nbot:  {reply}   "
                  f"(reference: {conv.messages[k]['content']})")
        print("-" * 71)
    _print_run_files(run_dir, model.num_params(), plot,
                     f"talk to it: qkv chat {run_dir}   (or: qkv chat {run_dir} --prompt \"What is 17 + 25?\")")
    return 0


def _run_diffusion(args, cfg, run_dir: Path) -> int:
    from qkv.data.images import save_grid
    from qkv.recipes.diffusion import generate, make_condition, train_diffusion
    from qkv.training.plots import plot_losses

    if args.init_from:
        raise QKVError("--init-from is not supported for the diffusion task")
    result, model, ema_model, tok, is_main, ae = train_diffusion(cfg, run_dir, resume=bool(args.resume))
    if not is_main:
        return 0
    plot = plot_losses(run_dir)
    last = next((e for e in reversed(result.evals) if "val_loss" in e), None)
    print(f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})")
    if last:
        print(f"val loss {last['val_loss']:.4f} | EMA weights {last['val_loss_ema']:.4f} "
              f"(MSE of the {cfg.diffusion.prediction} prediction on held-out images)")
        quality = {k: v for k, v in last.items() if k.endswith(("accuracy", "adherence")) or k == "fd"}
        if quality:
            print("samples (DDIM-20, EMA): " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))
    if not args.no_sample:
        from qkv.models.io import read_run_config

        s = cfg.sample
        prompts = read_run_config(run_dir).get("data_meta", {}).get("prompts")
        ema_model = ema_model.cpu()
        cond, _ = make_condition(ema_model, tok, s.n, prompts=prompts)
        images = generate(ema_model, cfg.diffusion, cond, s.n, sampler=s.sampler, steps=s.steps, eta=s.eta,
                          spacing=s.spacing, guidance=s.guidance, seed=s.seed,
                          autoencoder=ae.cpu() if ae is not None else None)
        width, height = save_grid(images, run_dir / "samples.png")
        print(f"samples: {run_dir / 'samples.png'} ({s.n} images, {width}×{height} px, {s.sampler}, "
              f"guidance {s.guidance})")
    _print_run_files(run_dir, model.num_params(), plot, f"sample more: qkv sample {run_dir} --n 64 --out grid.png",
                     weights_note=f" (EMA: {run_dir / 'ema.safetensors'})")
    return 0


def _print_run_files(run_dir: Path, n_params: int, plot, next_step: str, weights_note: str = "") -> None:
    """The closing lines of every `qkv train`: where the run's files are and what to run next."""
    print(f"run dir: {run_dir}  ({n_params:,} parameters)")
    print(f"  weights: {run_dir / 'model.safetensors'}{weights_note}")
    print(f"  metrics: {run_dir / 'metrics.jsonl'}")
    if plot:
        print(f"  plot:    {plot}")
    print(next_step)
