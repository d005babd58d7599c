"""The ``qkv`` command: one entry point, one module per subcommand.

Each subcommand module in ``qkv.cli`` exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
``main(argv)`` is callable in-process (the tests drive it that way). User errors (`QKVError`) print one
line to stderr and exit 2; nothing else is caught. ``qkv --version`` prints ``qkv X.Y.Z``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qkv.errors import QKVError

# subcommand -> module under qkv.cli, in the order `qkv --help` lists them
COMMANDS = {
    "train": "train",
    "pipeline": "pipeline",
    "presets": "presets",
    "generate": "generate",
    "translate": "translate",
    "caption": "caption",
    "transcribe": "transcribe",
    "answer": "answer",
    "summarize": "summarize",
    "complete": "complete",
    "chat": "chat",
    "sample": "sample",
    "noise": "noise",
    "eval": "evaluate",
    "params": "params",
    "attention": "attention",
    "explain": "explain",
    "report": "report",
    "convert": "convert",
    "data": "data",
    "serve": "serve",
    "human-eval": "human_eval",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="qkv", description="Transformers and diffusion models built from the attention head up."
    )
    parser.add_argument("--version", action="store_true", help="print qkv's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = {name: importlib.import_module(f"qkv.cli.{module}") for name, module in COMMANDS.items()}
    for name, mod in mods.items():
        mod.add_parser(sub, name)
    return parser, mods


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, mods = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.version and args.command is None:
        from qkv.version import version

        print(f"qkv {version()}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(mods[args.command], "ACCEPTS_OVERRIDES", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(mods[args.command].run(args) or 0)
    except QKVError as e:
        flag = f" (--{e.argument.replace('_', '-')})" if e.argument else ""
        print(f"qkv {args.command}: error: {e}{flag}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qkv {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
