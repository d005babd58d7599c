"""``qkv data list`` and ``qkv data get NAME``: named datasets, found locally or downloaded with a sha256 check."""

from __future__ import annotations

from qkv.data.registry import DATASETS, local_copy, resolve, stdlib_files, verify
from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="list or fetch datasets", description=__doc__)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="named datasets and where they are")
    g = verbs.add_parser("get", help="make a dataset available locally (download + sha256 check if needed)")
    g.add_argument("name", choices=sorted(DATASETS), metavar="NAME")


def run(args) -> int:
    if args.verb == "list":
        for name, info in DATASETS.items():
            if name == "pystdlib":
                where = f"local ({len(stdlib_files())} files)"
            else:
                found = local_copy(info)
                where = str(found) if found else "not downloaded"
            print(f"{name:<16} {info.description}\n{'':<16} {where}")
        return 0
    folder = resolve(args.name)
    if args.name == "pystdlib":
        print(f"pystdlib: {folder} ({len(stdlib_files())} .py files)")
        return 0
    results = verify(args.name)
    for file, ok in results:
        print(f"{'ok ' if ok else 'BAD'} sha256  {folder / file}")
    bad = [str(folder / file) for file, ok in results if not ok]
    if bad:
        raise QKVError(f"{', '.join(bad)}: sha256 does not match the registry (a damaged or different copy)")
    return 0
