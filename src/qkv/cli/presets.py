"""``qkv presets``: the training presets shipped with qkv, one line each (name and description).

    qkv presets                          # list them
    qkv presets demo-pystdlib            # print one preset's TOML (start your own: ... > my.toml)
    qkv train --preset demo-pystdlib     # train one; override any key: --train.max_steps 200

Model sizes (gpt2, gpt3-175b ...) are another list: ``qkv params --preset NAME``.
"""

from __future__ import annotations

import argparse
import sys

from qkv.presets import describe, preset_names, preset_path


def add_parser(sub, name):
    p = sub.add_parser(name, help="list the training presets (or print one)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", metavar="NAME", help="print this preset's TOML file")


def run(args) -> int:
    if args.name:
        sys.stdout.write(preset_path(args.name).read_text(encoding="utf-8"))
        return 0
    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {describe(name)}")
    return 0
