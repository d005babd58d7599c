"""``qkv translate RUN_DIR [--beam 4] [--input FILE]``: translate source sentences with a trained seq2seq run.

Reads one sentence per line from stdin (or --input FILE, plain or .gz) and writes the detokenized
translations to stdout, one per line, in the input order (blank lines give blank lines). Empty input
prints nothing. Decoding settings default to the run's [decode] section.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="translate sentences with a trained seq2seq run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--input", metavar="FILE", help="source sentences, one per line (default: stdin)")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")
    p.add_argument("--length-penalty", type=float, default=None, help="α of the length penalty")
    p.add_argument("--max-len-a", type=float, default=None, help="target length limit = a · source length + b")
    p.add_argument("--max-len-b", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="sentences decoded together")
    p.add_argument("--device", default="cpu")


def decode_config(args, saved: dict):
    """The run's [decode] settings with the command-line options on top."""
    from qkv.config import from_dict
    from qkv.generation.seq2seq import DecodeConfig

    values = dict(saved.get("decode", {}))
    for key in ("beam", "length_penalty", "max_len_a", "max_len_b", "batch_size"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return from_dict(DecodeConfig, values, prefix="decode.")


def load_seq2seq(run_dir: str, device: str = "cpu"):
    """(model, config dict, src tokenizer, tgt tokenizer) of a seq2seq run, or QKVError."""
    from qkv.models.io import load_model
    from qkv.recipes.translate import load_tokenizers

    model, cfg = load_model(run_dir, device=device)
    if cfg["model_type"] != "seq2seq":
        raise QKVError(f"{run_dir} is a {cfg['model_type']} run; this needs a seq2seq (translation) run")
    src_tok, tgt_tok = load_tokenizers(run_dir)
    return model, cfg, src_tok, tgt_tok


def run(args) -> int:
    from qkv.recipes.translate import translate_lines

    model, cfg, src_tok, tgt_tok = load_seq2seq(args.run_dir, args.device)
    dcfg = decode_config(args, cfg)
    if args.input:
        from qkv.data.translation import read_lines

        path = Path(args.input)
        if not path.is_file():
            raise QKVError(f"file not found: {path}")
        lines = read_lines(path) if path.stat().st_size else []
    else:
        text = sys.stdin.read()
        lines = [ln.strip() for ln in text.splitlines()]
    if not lines:
        return 0
    real = [i for i, ln in enumerate(lines) if ln]
    hyps, cut = translate_lines(model, src_tok, tgt_tok, [lines[i] for i in real], dcfg)
    if cut:
        print(f"note: {cut} source sentence(s) longer than the context ({model.config.max_seq_len} tokens) "
              "were truncated", file=sys.stderr)
    out = [""] * len(lines)
    for i, h in zip(real, hyps, strict=True):
        out[i] = h
    sys.stdout.write("".join(o.replace("\n", " ") + "\n" for o in out))
    sys.stdout.flush()
    return 0
