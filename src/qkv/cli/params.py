"""``qkv params``: where a model's parameters are; for a GPT also what a token costs and what training needs.

    qkv params --preset gpt2            # a named model size (qkv.models.presets; not a training preset)
    qkv params runs/shakespeare --json  # a run directory's config.json; no weights are read

The model is built on the meta device, so even ``--preset gpt3-175b`` allocates nothing. A run of another model
(translation, diffusion, autoencoder) gets its parameters grouped by module, layer numbers folded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from qkv.evaluation.params import format_groups, param_report, parameter_groups, report_for_model
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
    which.add_argument("--preset", metavar="NAME", help=f"a named model size (not a training preset of qkv train): "
                                                        f"{', '.join(PRESETS)}")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return p


def run(args) -> int:
    if args.preset is not None:
        report = param_report(get_preset(args.preset), args.preset)
    else:
        cfg = read_config(args.run_dir)
        model = build_model(cfg["model_type"], cfg["model"], device="meta")
        if cfg["model_type"] != "gpt":  # no FLOPs/memory formulas for these: the grouped table of any model
            rows, total = parameter_groups(model)
            if args.json:
                print(json.dumps({"name": str(args.run_dir), "model_type": cfg["model_type"], "total": total,
                                  "groups": [dataclasses.asdict(r) for r in rows]}, indent=2))
            else:
                print(format_groups(rows, total, f"{args.run_dir}: {cfg['model_type']} model, parameters by module"))
            return 0
        report = report_for_model(model, str(args.run_dir))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.format_table())
    return 0
