"""Named datasets: where they come from, how to check them, where they are kept.

Lookup order for ``resolve(name)``:
  1. ``$QKV_DATA_DIR/<name>/`` (tests and offline machines point this at a local copy),
  2. the cache, ``$QKV_CACHE_DIR`` or ``~/.cache/qkv/data/<name>/``,
  3. download into the cache, checking every file's sha256 before it is moved into place.
``pystdlib`` is the Python standard library's own source on this machine: nothing to download.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from qkv.errors import QKVError
from qkv.runs import atomic_write_bytes


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path inside the dataset folder
    url: str
    sha256: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    files: tuple[RemoteFile, ...] = field(default_factory=tuple)


_M30K = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
_M30K_SHA = {
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}

DATASETS: dict[str, DatasetInfo] = {
    "tinyshakespeare": DatasetInfo(
        "tinyshakespeare",
        "Shakespeare plays, 1,115,394 characters (the file nanoGPT's shakespeare_char uses)",
        (
            RemoteFile(
                "input.txt",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        ),
    ),
    "pystdlib": DatasetInfo("pystdlib", "this Python's standard library source (.py files, no tests): no download"),
    "multi30k": DatasetInfo(
        "multi30k",
        "Multi30k task 1 (en/de/fr image captions; train 29,000 / val 1,014 / test_2016_flickr 1,000 lines)",
        tuple(RemoteFile(name, _M30K + name, sha) for name, sha in _M30K_SHA.items()),
    ),
}

# stdlib folders left out of pystdlib: tests, GUI demos, vendored or generated code
_STDLIB_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip", "turtledemo",
                "tkinter", "__pycache__"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The .py files of pystdlib, sorted so every machine with the same Python reads the same corpus."""
    root = stdlib_dir()
    return sorted(p for p in root.rglob("*.py") if not _STDLIB_SKIP.intersection(p.relative_to(root).parts))


def cache_dir() -> Path:
    return Path(os.environ.get("QKV_CACHE_DIR", Path.home() / ".cache" / "qkv" / "data"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_copy(info: DatasetInfo) -> Path | None:
    """The first folder holding every file of the dataset, or None."""
    candidates = []
    if os.environ.get("QKV_DATA_DIR"):
        candidates.append(Path(os.environ["QKV_DATA_DIR"]) / info.name)
    candidates.append(cache_dir() / info.name)
    for folder in candidates:
        if all((folder / f.name).is_file() for f in info.files):
            return folder
    return None


def _download(f: RemoteFile, dest: Path) -> None:
    """Fetch `f`, check its sha256, and only then write it (atomically: a crash leaves no half file)."""
    try:
        with urllib.request.urlopen(f.url) as response:
            data = response.read()
    except OSError as e:
        raise QKVError(f"cannot download {f.url}: {e}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != f.sha256:
        raise QKVError(f"{f.url}: sha256 mismatch (got {got[:12]}…, expected {f.sha256[:12]}…); not saved")
    atomic_write_bytes(dest, data)


def resolve(name: str, download: bool = True) -> Path:
    """The local folder of dataset `name` (downloading it if allowed and needed)."""
    if name not in DATASETS:
        raise QKVError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or give a file or folder path)")
    info = DATASETS[name]
    if name == "pystdlib":
        return stdlib_dir()
    found = local_copy(info)
    if found is not None:
        return found
    if not download:
        raise QKVError(f"dataset {name!r} is not available locally; run `qkv data get {name}`")
    folder = cache_dir() / name
    for f in info.files:
        if not (folder / f.name).is_file():
            _download(f, folder / f.name)
    return folder


def verify(name: str) -> list[tuple[str, bool]]:
    """(file, sha256 ok) for every file of a local copy."""
    info = DATASETS[name]
    folder = resolve(name, download=False)
    return [(f.name, _sha256(folder / f.name) == f.sha256) for f in info.files]
