"""``qkv params``: where a GPT's parameters are, what a token costs, how much memory training needs.

    qkv params --preset gpt2            # a named size (qkv.models.presets)
    qkv params runs/shakespeare --json  # a run directory's config.json; no weights are read

The model is built on the meta device, so even ``--preset gpt3-175b`` allocates nothing.
"""

from __future__ import annotations

import argparse
import json

from qkv.errors import QKVError
from qkv.evaluation.params import param_report, report_for_model
from qkv.models.io import build_model
from qkv.models.presets import PRESETS, get_preset
from qkv.runs import read_config


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="count a model's parameters, FLOPs and memory",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory (its config.json)")
    which.add_argument("--preset", metavar="NAME", help=f"a named size: {', '.join(PRESETS)}")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return p


def run(args) -> int:
    if args.preset is not None:
        report = param_report(get_preset(args.preset), args.preset)
    else:
        cfg = read_config(args.run_dir)
        if cfg["model_type"] != "gpt":
            raise QKVError(f"{args.run_dir}: qkv params counts GPT models, this run is {cfg['model_type']!r}")
        report = report_for_model(build_model("gpt", cfg["model"], device="meta"), str(args.run_dir))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.format_table())
    return 0
