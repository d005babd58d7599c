"""``qkv caption RUN_DIR IMAGE [IMAGE ...] [--beam 4]``: caption images with a trained caption run.

Prints one line per image, ``IMAGE: caption``, in the order given. Images of another size are resized to the
model's (one note on stderr per file); a clip run reads each clip as one strip of its frames side by side (what
``qkv data scenes --clips`` writes). Decoding defaults to the run's [decode] section (greedy).
"""

from __future__ import annotations

import sys


def add_parser(sub, name):
    p = sub.add_parser(name, help="caption images with a trained caption run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.errors import QKVError
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.SOURCE_TO_TEXT, "qkv caption")
    if run_.source_kind != "image":
        raise QKVError(f"qkv caption reads images; {run_.path.name} turns {run_.source_kind} into text")
    decoding = run_.decoding(beam=args.beam)
    read = [run_.read_source(path) for path in args.images]
    captions = run_.to_text([x for x, _ in read], decoding)
    notes = [note for _, note in read if note]
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path, caption in zip(args.images, captions, strict=True):
        print(f"{path}: {caption}")
    return 0
