"""``qkv eval RUN_DIR [--data SRC] [--json]``: full-pass loss, perplexity and bits/char of a trained model.

Without --data it scores the run's own validation split (the same windows training reported); with
--data it scores any text file, folder or dataset name, tokenized with the run's tokenizer.
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


def run(args) -> int:
    from qkv.data.text import load_corpus, read_tokens
    from qkv.models.io import load_model
    from qkv.recipes.lm import full_pass_loss
    from qkv.tokenizers import load_tokenizer

    model, cfg = load_model(args.run_dir)
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
