"""`make test` in a clone with no ../shared/data and an empty cache: its `test-data` step downloads the corpora
with `qkv data get` (sha256-checked) into the cache, and the tests that need a corpus find them there.

No network: the corpora come from a mirror on 127.0.0.1 (tests/data_server.py) serving this machine's copies
(`shared_data`), named by $QKV_DATA_URL. The Makefile runs from a copy in a temp folder, with a stand-in .venv
whose `qkv` is this checkout's (so make installs nothing).
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

from data_server import DataServer
from helpers import CORPORA, REPO, run_or_fail
from qkv.data.registry import DATASETS

pytestmark = pytest.mark.slow

FILES = sorted(f"{name}/{f.name}" for name in CORPORA for f in DATASETS[name].files)


def _clone(root: Path) -> Path:
    """root/qkv: the Makefile and pyproject.toml, and a .venv whose bin/qkv runs this checkout's sources."""
    clone = root / "qkv"
    (clone / ".venv" / "bin").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, clone / name)
    qkv = clone / ".venv" / "bin" / "qkv"
    qkv.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m qkv "$@"\n')
    qkv.chmod(0o755)
    (clone / ".venv" / ".installed").touch()  # newer than pyproject.toml: nothing to install
    return clone


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QKV_") and k not in ("MAKEFLAGS", "MFLAGS")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO / "src"), **extra}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_make_test_data_downloads_the_corpora_into_an_empty_cache(shared_data, tmp_path):
    clone = _clone(tmp_path)
    assert not (clone.parent / "shared").exists()
    cache = tmp_path / "home" / ".cache" / "qkv" / "data"  # the default cache: $QKV_CACHE_DIR unset
    with DataServer(shared_data) as server:
        env = _env(tmp_path / "home", QKV_DATA_URL=server.url)
        done = run_or_fail(["make", "-s", "-C", str(clone), "test-data"], env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert sorted(server.requests) == FILES
        assert _files(cache) == FILES  # every file, nothing else: no temp files
        # one line per file; a corpus of many files (FSDD's 3,000 recordings) one line "N of N files"
        for name in CORPORA:
            files = DATASETS[name].files
            if len(files) > 20:
                assert f"ok  sha256  {len(files):,} of {len(files):,} files in {cache / name}" in done.stdout
            else:
                assert all(f"ok  sha256  {cache / name / f.name}" in done.stdout for f in files), done.stdout
        assert "BAD" not in done.stdout

        again = run_or_fail(["make", "-s", "-C", str(clone), "test-data"], env=env, timeout=300)
        assert again.returncode == 0 and len(server.requests) == len(FILES)  # found in the cache: no download

    # the tests that need a corpus now find them in the cache, with QKV_DATA_DIR unset
    tests = ["tests/unit/data/test_translation.py::test_multi30k_splits_and_directions",
             "tests/unit/data/test_text.py::test_resolve_finds_the_local_copy_and_verifies_it",
             "tests/unit/tokenizers/test_char.py::test_nanogpt_parity_on_tinyshakespeare"]
    done = run_or_fail([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *tests], cwd=REPO,
                       env=_env(tmp_path / "home"), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.count("PASSED") == len(tests), done.stdout[-3000:]


def test_make_test_data_uses_a_sibling_shared_data_without_downloading(shared_data, tmp_path):
    clone = _clone(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data, target_is_directory=True)
    with DataServer(shared_data) as server:
        env = _env(tmp_path / "home", QKV_DATA_URL=server.url)
        done = run_or_fail(["make", "-s", "-C", str(clone), "test-data"], env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert server.requests == []
    assert f"ok  sha256  {tmp_path / 'shared' / 'data' / 'tinyshakespeare' / 'input.txt'}" in done.stdout
    assert not (tmp_path / "home" / ".cache").exists()


def test_make_test_data_fails_when_the_download_fails(shared_data, tmp_path):
    clone = _clone(tmp_path)
    with DataServer(shared_data, faults={"tinyshakespeare/input.txt": "truncate"}) as server:
        done = run_or_fail(["make", "-s", "-C", str(clone), "test-data"],
                           env=_env(tmp_path / "home", QKV_DATA_URL=server.url), timeout=300)
    assert done.returncode != 0
    assert "qkv data: error: tinyshakespeare/input.txt" in done.stderr, done.stderr
    assert _files(tmp_path / "home") == []
