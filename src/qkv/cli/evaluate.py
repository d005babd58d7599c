"""``qkv eval RUN_DIR [--data SRC] [--json]``: full-pass loss, perplexity and bits/char of a trained model.

Without --data it scores the run's own validation split (the same windows training reported); with
--data it scores any text file, folder or dataset name, tokenized with the run's tokenizer.

For a translation (seq2seq) run: ``qkv eval RUN_DIR --data multi30k --split test_2016_flickr [--beam 4]
[--json]`` (or ``--src FILE --ref FILE``) translates the source side and prints sacreBLEU and chrF++ with
their signatures, the tokenized lower-cased BLEU older papers quote (labelled), and the teacher-forced
loss and perplexity of the references.

For a chat run: ``qkv eval RUN_DIR [--data FILE.jsonl|.csv] [--max-pairs N] [--json]`` prints the
answer-only loss and perplexity on the validation split and the greedy exact match on the unseen test
questions, single-turn and follow-up separately (with --data: both on that file).

For a diffusion (DiT) run: ``qkv eval RUN_DIR [--n 200] [--sampler ddim --steps 50] [--guidance 3] [--sweep]
[--json]`` trains a small classifier on the run's real training split and prints the sample accuracy (class
runs) or prompt adherence (shapes), and a Fréchet distance of classifier features (`qkv.evaluation.diffusion`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="evaluate a trained run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--data", help="text file, folder or dataset name (default: the run's validation split)")
    p.add_argument("--max-tokens", type=int, default=None, help="score only the first N tokens")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    g = p.add_argument_group("translation runs")
    g.add_argument("--split", default="test_2016_flickr", help="multi30k split: train, val, test_2016_flickr")
    g.add_argument("--src", metavar="FILE", help="source sentences (instead of --data/--split)")
    g.add_argument("--ref", metavar="FILE", help="reference translations, line-aligned with --src")
    g.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")
    g.add_argument("--length-penalty", type=float, default=None)
    g.add_argument("--max-pairs", type=int, default=None, help="score only the first N sentences")
    g.add_argument("--hyps-out", metavar="FILE", help="also write the translations here, one per line")
    d = p.add_argument_group("diffusion runs")
    d.add_argument("--n", type=int, default=200, help="images generated per setting")
    d.add_argument("--sampler", choices=["ddim", "ddpm"], default=None, help="default: the run's")
    d.add_argument("--steps", type=int, default=None, help="denoising steps (default: the run's)")
    d.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the run's)")
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--sweep", action="store_true",
                   help="DDIM 10/20/50 steps and DDPM 1000 at the run's guidance, then guidance 1/2/3/5 at DDIM-50")
    d.add_argument("--no-ema", action="store_true", help="score the raw weights instead of their average")


def run(args) -> int:
    from qkv.data.text import load_corpus, read_tokens
    from qkv.models.io import load_model
    from qkv.recipes.lm import full_pass_loss
    from qkv.tokenizers import load_tokenizer

    model, cfg = load_model(args.run_dir)
    if cfg["model_type"] == "dit":
        return _run_dit(args, cfg)
    if cfg.get("task") == "chat":
        return _run_chat(args)
    if cfg["model_type"] == "seq2seq":
        return _run_seq2seq(args, model, cfg)
    if cfg["model_type"] != "gpt":
        raise QKVError(f"{args.run_dir} is a {cfg['model_type']} run; this `qkv eval` scores GPT runs")
    run_dir = Path(args.run_dir)
    if args.data:
        tok = load_tokenizer(run_dir / "tokenizer.json")
        text = load_corpus(args.data)
        tokens = np.asarray(tok.encode(text), dtype=np.int64)
        chars_per_token, source = len(text) / max(1, len(tokens)), args.data
    else:
        meta = cfg.get("data_meta")
        if not meta or not (run_dir / "data" / "val.bin").is_file():
            raise QKVError(f"{run_dir} has no validation split on disk; pass --data")
        tokens = read_tokens(run_dir / "data" / "val.bin", meta["vocab_size"])
        chars_per_token, source = meta["chars_per_token"], f"{meta['source']} (validation split)"
    T = model.config.max_seq_len
    if len(tokens) < 2:
        raise QKVError(f"{source}: fewer than 2 tokens to score")
    loss = full_pass_loss(model, tokens, T, args.max_tokens)
    n = min(len(tokens) - 1, args.max_tokens or len(tokens))
    out = {"source": source, "tokens": n, "loss": loss, "perplexity": math.exp(min(loss, 50.0)),
           "bits_per_char": loss / math.log(2) / chars_per_token}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{source}: {n:,} tokens | loss {loss:.4f} nats/token | perplexity {out['perplexity']:.3f} | "
              f"{out['bits_per_char']:.4f} bits/char")
    return 0


def _run_seq2seq(args, model, cfg) -> int:
    from qkv.cli.translate import decode_config
    from qkv.data.translation import encode_lines, make_examples, multi30k_paths, read_parallel
    from qkv.evaluation.translation import TOK_LC_LABEL, perplexity, translation_scores
    from qkv.recipes.translate import corpus_loss, load_tokenizers, special_ids, translate_lines

    if (args.src is None) != (args.ref is None):
        raise QKVError("give both --src and --ref (line-aligned files), or neither")
    if args.max_pairs is not None and args.max_pairs <= 0:
        raise QKVError(f"--max-pairs must be positive, got {args.max_pairs}")
    if args.src:
        src_path, ref_path = args.src, args.ref
        source = f"{args.src} -> {args.ref}"
    else:
        data = cfg.get("data", {})
        dataset = args.data or data.get("dataset", "multi30k")
        if dataset != "multi30k":
            raise QKVError(f"unknown parallel dataset {dataset!r}; use --data multi30k or --src FILE --ref FILE")
        direction = data.get("direction", "de-en")
        src_path, ref_path = multi30k_paths(direction, args.split)
        source = f"multi30k {direction} {args.split}"
    src, ref = read_parallel(src_path, ref_path)
    if args.max_pairs:
        src, ref = src[: args.max_pairs], ref[: args.max_pairs]
    dcfg = decode_config(args, cfg)
    src_tok, tgt_tok = load_tokenizers(args.run_dir)
    pad, bos, eos = special_ids(tgt_tok)
    hyps, cut = translate_lines(model, src_tok, tgt_tok, src, dcfg)
    if args.hyps_out:
        from qkv.atomic import atomic_write_bytes

        atomic_write_bytes(Path(args.hyps_out), "".join(h.replace("\n", " ") + "\n" for h in hyps).encode("utf-8"))
    T = model.config.max_seq_len
    ex = make_examples(encode_lines(src_tok, src), encode_lines(tgt_tok, ref), T, eos, skip_empty=False)
    loss, n_tok = corpus_loss(model, ex, pad, bos, eos)
    scores = translation_scores(hyps, ref)
    scores["bleu_tok_lc"]["label"] = TOK_LC_LABEL
    out = {"source": source, "sentences": len(src), "beam": dcfg.beam, "length_penalty": dcfg.length_penalty,
           "length_norm": dcfg.length_norm, **scores, "loss": loss, "perplexity": perplexity(loss),
           "target_tokens": n_tok, "truncated_sources": cut}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    decoding = "greedy" if dcfg.beam == 1 else \
        f"beam {dcfg.beam}, {dcfg.length_norm} length penalty {dcfg.length_penalty}"
    print(f"{source}: {len(src):,} sentences, {decoding}")
    print(f"sacreBLEU {scores['bleu']['score']:6.2f}  {scores['bleu']['signature']}")
    print(f"chrF++    {scores['chrf++']['score']:6.2f}  {scores['chrf++']['signature']}")
    print(f"{TOK_LC_LABEL}: {scores['bleu_tok_lc']['score']:.2f}  {scores['bleu_tok_lc']['signature']}")
    print(f"loss {loss:.4f} nats/target token | perplexity {out['perplexity']:.3f} "
          f"(references, teacher-forced, {n_tok:,} tokens)")
    if cut:
        print(f"note: {cut} source sentence(s) longer than the context ({T} tokens) were truncated")
    return 0


def _run_chat(args) -> int:
    from qkv.recipes.chat import evaluate_chat_run

    if args.max_pairs is not None and args.max_pairs <= 0:
        raise QKVError(f"--max-pairs must be positive, got {args.max_pairs}")
    out = evaluate_chat_run(args.run_dir, args.data, args.max_pairs)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    fmt = lambda v, n: "n/a" if v is None else f"{v:.1%} of {n}"  # noqa: E731
    print(f"{out['source']}: answer loss {out['loss']:.4f} nats/token | perplexity {out['perplexity']:.3f} "
          f"({out['answer_tokens']:,} assistant tokens in {out['conversations']:,} conversations)")
    print(f"exact match (greedy): single-turn {fmt(out['em_single'], out['n_single'])} | "
          f"follow-up {fmt(out['em_followup'], out['n_followup'])}")
    for e in out["errors"]:
        print(f"  miss ({e['turn']}): {e['question']!r} -> {e['reply']!r}, expected {e['reference']!r}")
    if out["dropped"]:
        print(f"note: {out['dropped']} conversation(s) longer than the context were left out")
    return 0


def _run_dit(args, cfg) -> int:
    from qkv.cli.sample import sample_settings
    from qkv.diffusion.sampling import default_steps
    from qkv.recipes.diffusion import evaluate_diffusion_run

    n_timesteps = cfg["diffusion"].get("n_timesteps", 1000)

    s = sample_settings(args, cfg)
    if args.n <= 0:
        raise QKVError(f"--n must be positive, got {args.n}")
    base = {"sampler": s.sampler, "steps": s.steps, "guidance": s.guidance, "eta": s.eta, "spacing": s.spacing}
    if args.sweep:
        settings = [{**base, "sampler": "ddim", "steps": k} for k in (10, 20, 50)]
        settings += [{**base, "sampler": "ddpm", "steps": None, "eta": 0.0}]
        settings += [{**base, "sampler": "ddim", "steps": 50, "guidance": w} for w in (1.0, 2.0, 3.0, 5.0)]
    else:
        settings = [base]

    def show(row):
        if args.json:
            return
        steps = row["steps"] or default_steps(row["sampler"], n_timesteps)
        main = (f"sample accuracy {row['sample_accuracy']:6.1%}" if "sample_accuracy" in row else
                f"prompt adherence {row['prompt_adherence']:6.1%} (shape {row['shape_accuracy']:.1%}, colour "
                f"{row['colour_accuracy']:.1%}, position {row['position_accuracy']:.1%})")
        print(f"{row['sampler']:>4}-{steps:<4} guidance {row['guidance']:<4g} {main} | FD {row['fd']:7.2f} "
              f"(real vs real {row['fd_real']:.2f}) | {row['n_samples']} images in {row['seconds']:.1f} s",
              flush=True)

    if not args.json:
        print(f"{args.run_dir}: scoring {args.n} samples per setting ({'raw' if args.no_ema else 'EMA'} weights)")
    out = evaluate_diffusion_run(args.run_dir, settings, n=args.n, seed=s.seed, use_ema=not args.no_ema,
                                 progress=show)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    acc = ", ".join(f"{k} {v:.1%}" for k, v in out["classifier"]["val_accuracy"].items())
    print(f"judge: a CNN trained on {out['data']}; held-out accuracy {acc}")
    return 0
