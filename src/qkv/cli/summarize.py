"""``qkv summarize RUN_DIR [--input FILE ...] [--beam 4]``: one summary per document with a run that reads text
(a summarization run; any text-to-text run turns a whole file into one output).

Each ``--input`` file is one document (stdin when none is given), newlines and all, so a function's source stays
code. One summary per line, in the order of the files. A document longer than the model's context is cut, and a
note on stderr says how many tokens were dropped.
"""

from __future__ import annotations

import sys


def add_parser(sub, name):
    p = sub.add_parser(name, help="summarize documents with a text-to-text run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--input", nargs="+", metavar="FILE", help="documents, one per file (default: stdin)")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.data.files import decode_text, read_text
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.TEXT_SOURCE, "qkv summarize")
    docs = [read_text(f) for f in args.input] if args.input else [decode_text(sys.stdin.buffer.read(), "stdin")]
    read = [run_.read_source(d) for d in docs]  # the document as the encoder takes it, and what it cut
    for (name, (_, note)) in zip(args.input or ["stdin"], read, strict=True):
        if note:
            print(f"note: {name}: {note}", file=sys.stderr)
    for line in run_.to_text([r[0] for r in read], run_.decoding(beam=args.beam)):
        print(line.replace("\n", " "))
    return 0
