"""``qkv eval RUN_DIR [--data SRC] [--json]``: full-pass loss, perplexity and bits/char of a trained model.

Without --data it scores the run's own validation split (the same windows training reported); with
--data it scores any text file, folder or dataset name, tokenized with the run's tokenizer.

For a translation (seq2seq) run: ``qkv eval RUN_DIR --data multi30k --split test_2016_flickr [--beam 4]
[--json]`` (or ``--src FILE --ref FILE``) translates the source side and prints sacreBLEU and chrF++ with
their signatures, the tokenized lower-cased BLEU older papers quote (labelled), and the teacher-forced
loss and perplexity of the references.
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


def run(args) -> int:
    from qkv.data.text import load_corpus, read_tokens
    from qkv.models.io import load_model
    from qkv.recipes.lm import full_pass_loss
    from qkv.tokenizers import load_tokenizer

    model, cfg = load_model(args.run_dir)
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
