"""Named datasets: where they come from, how to check them, where they are kept.

Lookup order for ``resolve(name)``:
  1. ``$QKV_DATA_DIR/<name>/`` (tests and offline machines point this at a local copy),
  2. the cache, ``$QKV_CACHE_DIR`` or ``~/.cache/qkv/data/<name>/``,
  3. download into the cache: each file is streamed to a temp file in the dataset's folder, its length and
     sha256 checked, and only then renamed into place, so an interrupted or damaged download leaves nothing
     that looks like data.
Downloads come from each file's upstream URL, or from a mirror laid out like ``$QKV_DATA_DIR``
(``<base>/<name>/<file>``) when ``$QKV_DATA_URL`` (or ``resolve(..., base_url=)``) names one: a folder of
copies served with ``python -m http.server`` is such a mirror. A file's name may hold folders
(``recordings/0_george_0.wav``): they are made as the file is fetched.
``pystdlib`` is the Python standard library's own source on this machine: nothing to download.
``english`` is built from two of the others (`DatasetInfo.parts`: tinyshakespeare, multi30k) and the Python
documentation Debian's ``python3.X-doc`` installs (`pydoc_sources_dir`); ``resolve("english")`` makes the parts
available and returns that documentation's folder (`qkv.data.english` reads them).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files as package_files
from pathlib import Path

from qkv.errors import QKVError

TIMEOUT_S = 30.0  # seconds a download may wait for the connection or for the next bytes before it gives up
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path inside the dataset folder
    url: str  # upstream address
    sha256: str
    size: int | None = None  # bytes, when known: a longer or shorter body is refused before hashing


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    files: Sequence[RemoteFile] = field(default_factory=tuple)
    parts: tuple[str, ...] = ()  # the datasets this one is built from, made available with it (english)


class FileListing(Sequence[RemoteFile]):
    """The files of a dataset listed in a table shipped with the package (``qkv/data/<listing>``: one
    ``file<TAB>bytes<TAB>sha256`` line per file, ``#`` lines are comments), read on first use: parsing FSDD's
    3,000 lines costs ~10 ms that no other command should pay. Each file is ``<folder>/<file>`` in the dataset
    and ``<url_base><file>`` upstream."""

    def __init__(self, listing: str, folder: str, url_base: str):
        self.listing, self.folder, self.url_base = listing, folder, url_base

    @cached_property
    def _files(self) -> tuple[RemoteFile, ...]:
        text = package_files("qkv.data").joinpath(self.listing).read_text(encoding="utf-8")
        rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return tuple(RemoteFile(f"{self.folder}/{name}", self.url_base + name, sha, int(size))
                     for name, size, sha in rows)

    def __getitem__(self, i):
        return self._files[i]

    def __len__(self) -> int:
        return len(self._files)


_M30K = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
_M30K_SHA = {  # file -> (sha256, bytes)
    "test_2016_flickr.de.gz": ("9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8", 22890),
    "test_2016_flickr.en.gz": ("611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9", 21077),
    "test_2016_flickr.fr.gz": ("6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90", 22310),
    "train.de.gz": ("726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6", 637044),
    "train.en.gz": ("d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f", 568929),
    "train.fr.gz": ("622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c", 604242),
    "val.de.gz": ("f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a", 24681),
    "val.en.gz": ("14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28", 21650),
    "val.fr.gz": ("ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9", 23001),
}

_FSDD = "https://github.com/Jakobovski/free-spoken-digit-dataset/raw/26eb9aa/recordings/"

DATASETS: dict[str, DatasetInfo] = {
    "tinyshakespeare": DatasetInfo(
        "tinyshakespeare",
        "Shakespeare plays, 1,115,394 characters (the file nanoGPT's shakespeare_char uses)",
        (
            RemoteFile(
                "input.txt",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                1115394,
            ),
        ),
    ),
    "pystdlib": DatasetInfo("pystdlib", "this Python's standard library source (.py files, no tests): no download"),
    "multi30k": DatasetInfo(
        "multi30k",
        "Multi30k task 1 (en/de/fr image captions; train 29,000 / val 1,014 / test_2016_flickr 1,000 lines)",
        tuple(RemoteFile(name, _M30K + name, sha, size) for name, (sha, size) in _M30K_SHA.items()),
    ),
    "humaneval": DatasetInfo(
        "humaneval",
        "HumanEval: 164 Python problems with hidden tests (Chen et al. 2021; MIT), code generation's control",
        (
            RemoteFile(
                "HumanEval.jsonl.gz",
                "https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz",
                "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
                44877,
            ),
        ),
    ),
    "fsdd": DatasetInfo(  # speakers and the official split: qkv.data.speech (FSDD_ACCENTS, fsdd_split)
        "fsdd",
        "Free Spoken Digit Dataset: 6 speakers x 10 digits x 50 takes, 3,000 WAV files, 8 kHz (CC BY-SA 4.0)",
        FileListing("fsdd_files.tsv", "recordings", _FSDD),
    ),
    "english": DatasetInfo(
        "english",
        "real English, split by document: the Python docs (python3.X-doc), Multi30k's English, tinyshakespeare",
        parts=("tinyshakespeare", "multi30k"),
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


PYDOC_SOURCES_ENV = "QKV_PYDOC_SOURCES"  # overrides where the Python documentation's reST sources are


def pydoc_sources_dir() -> Path:
    """The reST sources of the Python documentation (``*.rst.txt``): ``$QKV_PYDOC_SOURCES``, else where Debian's
    ``python3.X-doc`` puts them for the running Python; QKVError saying how to get them when absent."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = Path(os.environ.get(PYDOC_SOURCES_ENV) or f"/usr/share/doc/python{version}/html/_sources")
    if not folder.is_dir() or next(folder.rglob("*.rst.txt"), None) is None:
        raise QKVError(f"no Python documentation sources (*.rst.txt) in {folder}: `apt-get install "
                       f"python{version}-doc`, or set {PYDOC_SOURCES_ENV} to a folder of them")
    return folder


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


def data_url() -> str | None:
    """The mirror downloads come from ($QKV_DATA_URL), or None for the upstream URLs."""
    return os.environ.get("QKV_DATA_URL") or None


def file_url(info: DatasetInfo, f: RemoteFile, base_url: str | None = None) -> str:
    """Where `f` is downloaded from: ``<base>/<dataset>/<file>`` on a mirror, else its upstream URL."""
    base = base_url or data_url()
    return f"{base.rstrip('/')}/{info.name}/{f.name}" if base else f.url


def _one_line(e: BaseException) -> str:
    """What went wrong, on one line: "HTTP 404 Not Found", "connection refused", "timed out"."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    if isinstance(e, TimeoutError):
        return f"timed out (nothing for {TIMEOUT_S:g} s)"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    text = " ".join(str(e).split())
    return text if text and type(e).__name__ in text else f"{type(e).__name__}: {text}".rstrip(": ")


def _fetch_to(url: str, out, size: int | None) -> tuple[int, str]:
    """Stream `url` into the open file `out`: (bytes written, sha256). At most `size` + 1 bytes are read, and
    no read waits longer than TIMEOUT_S, so a server that stalls or never stops sending ends the download."""
    h, n = hashlib.sha256(), 0
    limit = None if size is None else size + 1
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        announced = response.headers.get("Content-Length")
        while limit is None or n < limit:  # each read returns bytes, b"" at the end, or raises (timeout)
            chunk = response.read(_CHUNK if limit is None else min(_CHUNK, limit - n))
            if not chunk:
                break
            h.update(chunk)
            out.write(chunk)
            n += len(chunk)
    if size is not None and n > size:
        raise QKVError(f"more than the {size:,} bytes expected")
    if announced is not None and announced.isdigit() and n < int(announced):
        raise QKVError(f"the body ended after {n:,} of {int(announced):,} bytes")
    if size is not None and n < size:
        raise QKVError(f"{n:,} bytes, expected {size:,}")
    return n, h.hexdigest()


def _download(url: str, f: RemoteFile, folder: Path) -> None:
    """Fetch `url` into ``folder / f.name``: streamed to a temp file next to it, length and sha256 checked, then
    renamed. Any failure is a one-line QKVError naming the file, and leaves no temp file behind."""
    dest = folder / f.name
    where = f"{folder.name}/{f.name}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest.parent.glob(f".{dest.name}.*.part"):  # left by a killed earlier download
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise QKVError(f"{where}: cannot write into {dest.parent}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                _, got = _fetch_to(url, out, f.size)
            except QKVError as e:
                raise QKVError(f"{where}: download from {url} failed: {e}; nothing saved") from None
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise QKVError(f"{where}: cannot download {url}: {_one_line(e)}; nothing saved") from None
            out.flush()
            os.fsync(out.fileno())
        if got != f.sha256:
            raise QKVError(f"{where}: sha256 mismatch for {url} (got {got[:12]}…, expected {f.sha256[:12]}…); "
                           "nothing saved")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve(name: str, download: bool = True, base_url: str | None = None) -> Path:
    """The local folder of dataset `name` (downloading it if allowed and needed; from the mirror `base_url`
    or $QKV_DATA_URL when given, see `file_url`)."""
    if name not in DATASETS:
        raise QKVError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or give a file or folder path)")
    info = DATASETS[name]
    if name == "pystdlib":
        return stdlib_dir()
    if info.parts:  # english: its parts, then the documentation folder (a one-line error if it is missing)
        for part in info.parts:
            resolve(part, download, base_url)
        return pydoc_sources_dir()
    found = local_copy(info)
    if found is not None:
        return found
    if not download:
        raise QKVError(f"dataset {name!r} is not available locally; run `qkv data get {name}`")
    folder = cache_dir() / name
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QKVError(f"cannot create the cache folder {folder}: {e.strerror} (set QKV_CACHE_DIR)") from None
    try:
        missing = [f for f in info.files if not (folder / f.name).is_file()]
        from tqdm import tqdm

        # a dataset of many small files (FSDD's 3,000 recordings) shows a bar; one or a few files do not
        for f in tqdm(missing, desc=f"downloading {name}", unit="file", disable=len(missing) <= 20, leave=False):
            _download(file_url(info, f, base_url), f, folder)
    except BaseException:
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):  # subfolders left empty
            if not any(sub.iterdir()):
                sub.rmdir()
        if created and not any(folder.iterdir()):  # a folder this call made and filled with nothing goes again
            folder.rmdir()
        raise
    return folder


def verify(name: str) -> list[tuple[str, bool]]:
    """(file, sha256 ok) for every file of a local copy."""
    info = DATASETS[name]
    folder = resolve(name, download=False)
    return [(f.name, _sha256(folder / f.name) == f.sha256) for f in info.files]
