"""``qkv answer RUN_DIR --passage FILE [--head generative|extractive|both] QUESTION [QUESTION ...]``: answer
questions about a passage with a run that can point at its answer (the span head of a question-answering run).

The passage is a UTF-8 text file (or ``-`` for stdin), read as one paragraph; each question is answered on its own
line. ``--head both`` prints the decoder's written answer and the span head's pointed one side by side. A passage
longer than the model's context is cut, and a note on stderr says how many characters were dropped.
"""

from __future__ import annotations

import sys

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="answer questions about a passage with a question-answering run",
                       description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("questions", nargs="+", metavar="QUESTION")
    p.add_argument("--passage", required=True, metavar="FILE", help="the passage, a text file (- for stdin)")
    p.add_argument("--head", choices=["generative", "extractive", "both"], default="generative",
                   help="which head answers: the decoder writes the answer, the span head points at it")
    p.add_argument("--beam", type=int, default=None, help="the generative head's beam (default: the run's)")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.data.files import decode_text, read_text
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.SPANS, "qkv answer")
    passage = decode_text(sys.stdin.buffer.read(), "stdin") if args.passage == "-" else read_text(args.passage)
    questions = [q.strip() for q in args.questions]
    if not all(questions):
        raise QKVError("a question is empty")
    heads = ["generative", "extractive"] if args.head == "both" else [args.head]
    got = {h: run_.answer(questions, [passage] * len(questions), h, beam=args.beam if h == "generative" else None)
           for h in heads}
    notes = got[heads[0]][1]
    if notes and notes[0]:
        print(f"note: {notes[0]}", file=sys.stderr)
    for k, q in enumerate(questions):
        if len(heads) == 1:
            print(got[heads[0]][0][k])
        else:
            print(f"{q}\n  generative: {got['generative'][0][k]}\n  extractive: {got['extractive'][0][k]}")
    return 0
