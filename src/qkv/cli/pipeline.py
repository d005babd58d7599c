"""``qkv pipeline --config configs/chat-pipeline.toml [--out DIR] [--section.key VALUE ...]``: a chat model in stages —
tokenizer, base pretraining, SFT, RL — then a report (`qkv.pipeline.stages`).

Each stage is an ordinary run directory in the out folder, read by the next with ``--init-from``. One progress
line per stage; run the same command again after a crash and it resumes at the stage, and the step, where it
stopped. ``--section.key VALUE`` overrides a setting of the file (``--base.train.max_minutes 20``,
``--tokenizer.vocab_size 4096``).
"""

from __future__ import annotations

ACCEPTS_OVERRIDES = True


def add_parser(sub, name):
    p = sub.add_parser(name, help="tokenizer -> base -> SFT -> RL -> report, each stage a run (resumable)",
                       description=__doc__)
    p.add_argument("--config", required=True, metavar="FILE", help="the pipeline's TOML file "
                                                                   "(configs/chat-pipeline.toml)")
    p.add_argument("--out", help="the pipeline's folder (default: the file's out = ...)")


def run(args) -> int:
    from qkv.config import parse_overrides
    from qkv.pipeline.stages import load_pipeline_config, run_pipeline

    overrides = parse_overrides(args.overrides)
    if args.out:
        overrides["out"] = args.out
    cfg = load_pipeline_config(args.config, overrides)
    state = run_pipeline(cfg)
    total = sum(s["seconds"] for s in state["stages"]) + state.get("report_seconds", 0.0)
    print(f"pipeline done in {total / 60:.1f} min: {cfg.out}")
    print(f"talk to the final run: qkv chat {cfg.out}/{state['final']}   compare the stages: qkv serve {cfg.out}")
    return 0
