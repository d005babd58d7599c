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


def run(args) -> int:
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.TEXT_SOURCE, "qkv translate")
    decoding = run_.decoding(beam=args.beam, length_penalty=args.length_penalty, max_len_a=args.max_len_a,
                             max_len_b=args.max_len_b, batch_size=args.batch_size)
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
    hyps, cut = run_.translate([lines[i] for i in real], decoding)
    if cut:
        print(f"note: {cut} source sentence(s) longer than the context ({run_.model.config.max_seq_len} tokens) "
              "were truncated", file=sys.stderr)
    out = [""] * len(lines)
    for i, h in zip(real, hyps, strict=True):
        out[i] = h
    sys.stdout.write("".join(o.replace("\n", " ") + "\n" for o in out))
    sys.stdout.flush()
    return 0
