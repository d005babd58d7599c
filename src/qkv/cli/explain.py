"""``qkv explain [TOPIC RUN_DIR] [--text | --src | --image | --audio | --prompt ...] [--layer L --head H] [--png DIR]
[--json]``.

Each concept of the transformer lesson, shown on a trained run's real tensors: a short paragraph, then the
tensors this run computes for your input (shapes, a few rows of numbers, statistics). Where a topic takes a
module apart (Q/K/V, the heads, the output layer) it puts the parts back together and prints the largest
difference from the module's own output. `qkv explain` with no topic lists the topics in lesson order;
`qkv explain RUN_DIR`, the topics that apply to that run.

    qkv explain                                             # the topics, one line each
    qkv explain runs/shapes-caption                         # the topics that apply to this run
    qkv explain tokens runs/shakespeare --text "ROMEO: hi"
    qkv explain qkv runs/shakespeare --layer 0 --head 1 --png explain/
    qkv explain alignment runs/multi30k-de-en --src "Ein Mann fährt Fahrrad." --png explain/
    qkv explain audio runs/fsdd-digits --audio seven.wav --png explain/    # a recording -> log-mel -> letters
    qkv explain heads runs/shakespeare --compare runs/shakespeare-1head
"""

from __future__ import annotations

import json
import sys

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="each concept of the lesson, on a trained run's real tensors",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("topic", nargs="?", help="a topic (no topic: list them)")
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--text", help="the text a GPT or chat run reads (training-pairs: a chat conversation in its "
                   "template, or with --src the target of a translation pair)")
    p.add_argument("--src", help="the source sentence a translation run reads (evaluation: one of the run's "
                   "validation sources, whose reference it needs)")
    p.add_argument("--image", help="the image a captioning run reads (evaluation and training-pairs: with --text, "
                   "the caption)")
    p.add_argument("--audio", metavar="FILE.wav", help="the recording (a WAV file) a speech run reads: the audio topic "
                   "and the topics that read a source (default: the run's first validation recording)")
    p.add_argument("--prompt", help="a diffusion run's prompt, or its class label")
    p.add_argument("--layer", type=int, default=None, help="layer index (negative counts from the end)")
    p.add_argument("--head", type=int, default=None, help="head index")
    p.add_argument("--compare", metavar="RUN_B", help="heads: a second run that differs in head count")
    p.add_argument("--seed", type=int, default=0, help="seeds the noise of the diffusion topic")
    p.add_argument("--png", metavar="DIR", help="also write the topic's pictures here")
    p.add_argument("--json", action="store_true", help="every number as JSON instead of text")


def run(args) -> int:
    from pathlib import Path

    from qkv.explain import TOPICS, explain

    if args.topic is not None and args.topic not in TOPICS and args.run_dir is None and Path(args.topic).is_dir():
        return _topics_of(args.topic)  # qkv explain RUN_DIR: the topics that apply to that run
    if args.topic is None:
        width = max(len(t) for t in TOPICS)
        for name, t in TOPICS.items():
            print(f"{name:<{width}}  {t.line}")
        print("\nqkv explain TOPIC RUN_DIR [--text ... | --src ... | --image ... | --audio ... | --prompt ...] "
              "[--layer L --head H] [--png DIR]")
        print("qkv explain RUN_DIR: the topics that apply to that run")
        return 0
    if args.topic not in TOPICS:
        raise QKVError(f"unknown topic {args.topic!r}; the topics are: {', '.join(TOPICS)}")
    if args.run_dir is None:
        raise QKVError(f"explain {args.topic} needs a run directory: qkv explain {args.topic} RUN_DIR")
    from qkv.tasks import load_run

    run_ = load_run(args.run_dir)
    compare = load_run(args.compare) if args.compare else None
    e = explain(args.topic, run_, text=args.text, src=args.src, image=args.image, audio=args.audio,
                prompt=args.prompt, layer=args.layer, head=args.head, compare=compare, seed=args.seed)
    written = e.write_pngs(args.png) if args.png else []
    if args.json:
        out = e.to_json()
        out["pngs"] = [str(p) for p in written]
        json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print(e.format_text())
        for p in written:
            print(f"picture: {p}")
    return 0


def _topics_of(run_dir: str) -> int:
    """The topics of one run, in lesson order: those that apply, then those that need what it cannot do."""
    from qkv.explain import TOPICS, applies, missing
    from qkv.tasks import load_run

    run_ = load_run(run_dir)
    width = max(len(t) for t in TOPICS)
    print(f"{run_.path.name}: {run_.describe()}")
    shown = [name for name in TOPICS if applies(name, run_)]
    for name in shown:
        print(f"  {name:<{width}}  {TOPICS[name].line}")
    others = [name for name in TOPICS if name not in shown]
    if others:
        print("not for this run:")
        for name in others:
            print(f"  {name:<{width}}  needs a run that {missing(name, run_, codes=False)}")
    print(f"\nqkv explain TOPIC {run_dir} [--text ... | --src ... | --image ... | --audio ... | --prompt ...]")
    return 0
