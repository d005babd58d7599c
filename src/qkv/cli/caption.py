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
    from qkv.tasks import load_run

    run_ = load_run(args.run_dir, device=args.device)
    if not hasattr(run_, "caption_files"):
        from qkv.errors import QKVError
        from qkv.tasks.base import a_

        raise QKVError(f"{args.run_dir} is {a_(run_.task)} run; captioning needs a caption run")
    captions, notes = run_.caption_files(args.images, run_.decoding(beam=args.beam))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path, caption in zip(args.images, captions, strict=True):
        print(f"{path}: {caption}")
    return 0
