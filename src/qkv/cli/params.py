"""``qkv params``: where a model's parameters are; for a GPT also what a token costs and what training needs.

    qkv params --preset gpt2            # a named model size (qkv.models.presets; not a training preset)
    qkv params runs/shakespeare --json  # a run directory's config.json; no weights are read

The model is built on the meta device, so even ``--preset gpt3-175b`` allocates nothing. A run of another model
(translation, diffusion, autoencoder) gets its parameters grouped by module, layer numbers folded.
"""

from __future__ import annotations

import argparse
import json

from qkv.evaluation.params import param_report
from qkv.models.io import build_model
from qkv.models.presets import PRESETS, get_preset
from qkv.runs import read_config
from qkv.tasks import get_task, task_of


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
        table = param_report(get_preset(args.preset), args.preset)
    else:
        saved = read_config(args.run_dir)
        model = build_model(saved["model_type"], saved["model"], device="meta")
        table = get_task(task_of(saved)).run_class.table_of(model, str(args.run_dir))
    print(json.dumps(table.to_json(), indent=2) if args.json else table.format_text())
    return 0
