"""``qkv train --preset NAME | --config FILE [--out RUN_DIR] [--data SRC] [--section.key VALUE ...]``.

When it ends, the main process also writes the run's report card (`qkv.report`: RUN/report.html and report.md,
without samples under ``--no-sample``); a report that cannot be written is a one-line note, never a failed run.

``--preset`` names a config shipped with qkv (`qkv.presets`; ``qkv presets`` lists them), ``--config`` a TOML
file of your own. The config's ``task`` names the task (`qkv.tasks.TASKS`: lm, translate, chat, diffusion, autoencoder);
`qkv.tasks.runner.run_task` trains it, whatever it is. ``--resume RUN_DIR`` continues a run from its last
checkpoint (the budget may change, nothing else); ``--init-from RUN_DIR`` starts from another run's weights
and tokenizer (lm, chat and translate; a translation run fine-tuned with minimum risk training needs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qkv.config import from_dict, load_toml, merge, parse_overrides
from qkv.errors import QKVError
from qkv.presets import load_preset, preset_names

ACCEPTS_OVERRIDES = True


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a model from a preset or a TOML config",
                       description="Train a model from a preset (qkv presets lists them) or your own TOML config. "
                                   "Any setting can be overridden: --train.max_steps 200 --model.n_layers 4.")
    p.add_argument("--preset", metavar="NAME", help="a training preset shipped with qkv (qkv presets lists them)")
    p.add_argument("--config", metavar="FILE", help="a TOML config of your own (qkv presets NAME prints one to "
                                                    "start from)")
    p.add_argument("--out", help="run directory to create (default: runs/<preset or config name>)")
    p.add_argument("--data", help="dataset name or a path to a text file/folder (sets data.source; for "
                                  "translate, data.dataset)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from another run's weights and tokenizer")
    p.add_argument("--no-sample", action="store_true", help="don't print a sample when training ends")


def _with_data(overrides: dict, data: str | None, task: str) -> dict:
    """Apply ``--data``: the task's data option (data.source; translation: data.dataset)."""
    from qkv.tasks import get_task

    if not data:
        return overrides
    return merge(overrides, {"data": {get_task(task).data_option: data}})


def _load_config_file(path: str) -> dict:
    """A user's TOML config; a missing file named like a preset (configs/NAME.toml, from before the presets moved
    into the package) says to use ``--preset NAME``."""
    p = Path(path)
    if not p.is_file() and p.suffix == ".toml" and p.stem in preset_names():
        raise QKVError(f"config file not found: {path}; the presets ship with qkv: --preset {p.stem}")
    return load_toml(p)


def chosen_config(args) -> tuple[dict | None, str | None]:
    """(the raw config of --preset or --config, its name for the default run dir), or (None, None)."""
    if args.preset and args.config:
        raise QKVError(f"give --preset NAME or --config FILE, not both (got --preset {args.preset} and "
                       f"--config {args.config})")
    if args.preset:
        return load_preset(args.preset), args.preset
    if args.config:
        return _load_config_file(args.config), Path(args.config).stem
    return None, None


def resolve_config(args):
    """(typed run config, run dir, whether the config set model.vocab_size)."""
    from qkv.tasks import get_task
    from qkv.tasks.runner import saved_run_config

    overrides = parse_overrides(args.overrides)
    raw, name = chosen_config(args)
    if args.resume:
        from qkv.runs import read_config
        from qkv.tasks import task_of

        run_dir = Path(args.resume)
        task = task_of(read_config(run_dir))
        changes = merge(raw, overrides) if raw is not None else overrides
        return saved_run_config(run_dir, _with_data(changes, args.data, task)), run_dir, True
    if raw is None:
        raise QKVError("give --preset NAME (qkv presets lists them) or --config FILE, or --resume RUN_DIR")
    task = raw.get("task", "lm")
    raw = merge(raw, _with_data(overrides, args.data, task))
    run_dir = Path(args.out) if args.out else Path("runs") / name
    return from_dict(get_task(task).config_class, raw), run_dir, "vocab_size" in raw.get("model", {})


def run(args) -> int:
    from qkv.tasks import run_task
    from qkv.training.plots import plot_losses

    cfg, run_dir, vocab_given = resolve_config(args)
    trained = run_task(cfg, run_dir, resume=bool(args.resume), init_from=args.init_from,
                       fit_vocab=not vocab_given)
    if not trained.is_main:
        return 0
    task, state, model = trained.task, trained.state, trained.model
    plot = plot_losses(run_dir)
    print("\n".join(task.summary(state, model, trained.result)))
    if not args.no_sample:
        for piece in task.samples(state, model):
            sys.stdout.write(piece)
            sys.stdout.flush()
    report = write_report_or_note(run_dir, samples=not args.no_sample)
    print_run_files(run_dir, trained.model.num_params(), plot, task.next_command(), task.weights_note(), report)
    return 0


def write_report_or_note(run_dir: Path, samples: bool) -> Path | None:
    """RUN/report.html and report.md (`qkv.report`); the page's path, or None after a one-line note on stderr."""
    from qkv.report import write_report

    try:
        return write_report(run_dir, samples=samples)[0]
    except Exception as e:  # the run is trained and saved whatever goes wrong here: a note, not a failure
        print(f"note: the report was not written ({type(e).__name__}: {e}); qkv report {run_dir} tries again",
              file=sys.stderr)
        return None


def print_run_files(run_dir: Path, n_params: int, plot, next_step: str, weights_note: str = "",
                    report: Path | None = None) -> None:
    """The closing lines of every `qkv train`: where the run's files are and what to run next."""
    from qkv.runs import METRICS_FILE, WEIGHTS_FILE, sharded_checkpoint

    print(f"run dir: {run_dir}  ({n_params:,} parameters)")
    sharded = sharded_checkpoint(run_dir) if not (run_dir / WEIGHTS_FILE).is_file() else None
    if sharded is not None:
        print(f"  weights: {sharded}/ (sharded; qkv convert --consolidate {run_dir} writes {WEIGHTS_FILE})"
              f"{weights_note}")
    else:
        print(f"  weights: {run_dir / WEIGHTS_FILE}{weights_note}")
    print(f"  metrics: {run_dir / METRICS_FILE}")
    if plot:
        print(f"  plot:    {plot}")
    if report:
        print(f"  report:  {report} (and {report.with_suffix('.md').name})")
    print(next_step)
