"""``qkv report RUN [--out DIR] [--eval] [--db FILE]``: a run's report card, one HTML page and its Markdown twin.

    qkv report runs/shakespeare                  # runs/shakespeare/report.html and report.md
    qkv report runs/multi30k --eval              # also run the run's own evaluation (what qkv eval prints)
    qkv report runs/multi30k --db human-eval.db  # and the human-evaluation campaigns that compared it

The page is one file: inline CSS, pictures and recordings (a speech run's, in the browser's player) as data: URLs,
no script, nothing fetched; open it from disk, mail it, or follow its link in `qkv serve`. What is in it:
`qkv.report`. `qkv train` writes the same report when it ends.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="write a run's report card (one self-contained HTML page and Markdown)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--out", metavar="DIR", help="the folder to write report.html and report.md into (default: RUN)")
    p.add_argument("--eval", action="store_true", help="also run the run's evaluation with its defaults (as qkv "
                                                        "eval RUN does; may be slow) and include its results")
    p.add_argument("--db", metavar="FILE", help="a human-evaluation store: include the campaigns that compared "
                                                "this run")
    return p


def run(args) -> int:
    from qkv.report import write_report

    html, md = write_report(args.run_dir, args.out, evaluate=args.eval, db=args.db)
    print(html)
    print(md)
    return 0
