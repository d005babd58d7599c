"""Downloads against a real HTTP server on 127.0.0.1 (tests/data_server.py): a right file is installed, and a
wrong hash, a truncated body, a server that dies mid-file or stalls each give one line naming the file, exit 2
from `qkv data get`, and leave nothing in the cache that is half-written or looks like data."""

import hashlib
import os
from pathlib import Path

import pytest

from data_server import DataServer
from helpers import assert_user_error, qkv
from qkv.data import registry
from qkv.data.registry import DATASETS, DatasetInfo, RemoteFile, file_url, resolve, verify
from qkv.errors import QKVError

PAYLOAD = os.urandom(300_000)  # several read chunks, so "mid-file" is mid-stream
SECOND = b"a second, small file\n"


def _tiny(sizes: bool = True) -> DatasetInfo:
    """A two-file dataset whose upstream URLs must never be asked for (example.invalid)."""
    def remote(name, data):
        return RemoteFile(name, f"https://example.invalid/{name}", hashlib.sha256(data).hexdigest(),
                          len(data) if sizes else None)

    return DatasetInfo("tiny", "a test dataset", (remote("input.bin", PAYLOAD), remote("notes.txt", SECOND)))


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """No local copies anywhere (QKV_DATA_DIR unset, an empty cache, returned) and the `tiny` dataset registered."""
    monkeypatch.delenv("QKV_DATA_DIR", raising=False)
    monkeypatch.delenv("QKV_DATA_URL", raising=False)
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(DATASETS, "tiny", _tiny())
    return tmp_path / "cache"


def _mirror(tmp_path, input_bin: bytes = PAYLOAD) -> Path:
    root = tmp_path / "mirror"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "input.bin").write_bytes(input_bin)
    (root / "tiny" / "notes.txt").write_bytes(SECOND)
    return root


def _files(folder: Path) -> list[str]:
    """Every file and folder under `folder`, hidden ones included, as relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _assert_nothing_installed(cache: Path) -> None:
    assert _files(cache) == [], f"left in the cache: {_files(cache)}"
    with pytest.raises(QKVError, match="not available locally"):  # nothing counts as downloaded
        resolve("tiny", download=False)


def test_the_mirror_url_is_base_dataset_file(monkeypatch):
    info = _tiny()
    monkeypatch.delenv("QKV_DATA_URL", raising=False)
    assert file_url(info, info.files[0]) == "https://example.invalid/input.bin"
    assert file_url(info, info.files[0], "http://127.0.0.1:9/m/") == "http://127.0.0.1:9/m/tiny/input.bin"
    monkeypatch.setenv("QKV_DATA_URL", "http://127.0.0.1:9")
    assert file_url(info, info.files[1]) == "http://127.0.0.1:9/tiny/notes.txt"
    shakespeare = DATASETS["tinyshakespeare"]
    assert file_url(shakespeare, shakespeare.files[0]) == "http://127.0.0.1:9/tinyshakespeare/input.txt"


def test_a_right_hash_installs_the_files(cache, tmp_path, monkeypatch, capsys):
    with DataServer(_mirror(tmp_path)) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, out, err = qkv(capsys, "data", "get", "tiny")
        assert rc == 0, err
        assert server.requests == ["tiny/input.bin", "tiny/notes.txt"]
        assert out.splitlines() == [f"ok  sha256  {cache / 'tiny' / 'input.bin'}",
                                    f"ok  sha256  {cache / 'tiny' / 'notes.txt'}"]
        assert _files(cache) == ["tiny", "tiny/input.bin", "tiny/notes.txt"]  # no temp file left beside them
        assert (cache / "tiny" / "input.bin").read_bytes() == PAYLOAD
        assert resolve("tiny") == cache / "tiny" and len(server.requests) == 2  # reused, not fetched again
    assert verify("tiny") == [("input.bin", True), ("notes.txt", True)]


def test_base_url_argument_downloads_from_the_mirror(cache, tmp_path):
    with DataServer(_mirror(tmp_path)) as server:
        assert resolve("tiny", base_url=server.url) == cache / "tiny"
        assert server.requests == ["tiny/input.bin", "tiny/notes.txt"]


@pytest.mark.parametrize("sizes", [True, False], ids=["size-known", "size-unknown"])
def test_a_wrong_hash_is_refused(cache, tmp_path, monkeypatch, capsys, sizes):
    """Same length, one byte changed: only the sha256 can tell (with or without a size in the registry)."""
    monkeypatch.setitem(DATASETS, "tiny", _tiny(sizes))
    damaged = bytes([PAYLOAD[0] ^ 1]) + PAYLOAD[1:]
    with DataServer(_mirror(tmp_path, damaged)) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "qkv data: error: tiny/input.bin", "sha256 mismatch", "nothing saved")
    _assert_nothing_installed(cache)


def test_a_longer_body_than_the_registry_says_is_refused(cache, tmp_path, monkeypatch, capsys):
    with DataServer(_mirror(tmp_path, PAYLOAD + b"more")) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "tiny/input.bin", "more than the 300,000 bytes expected")
    _assert_nothing_installed(cache)


@pytest.mark.parametrize("sizes", [True, False], ids=["size-known", "size-unknown"])
def test_a_truncated_body_is_refused(cache, tmp_path, monkeypatch, capsys, sizes):
    """Content-Length says 300,000 bytes, 150,000 come, then the connection closes."""
    monkeypatch.setitem(DATASETS, "tiny", _tiny(sizes))
    with DataServer(_mirror(tmp_path), faults={"tiny/input.bin": "truncate"}) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "tiny/input.bin", "nothing saved")
    assert "IncompleteRead" in err or "body ended" in err, err
    _assert_nothing_installed(cache)


def test_a_server_that_dies_mid_file(cache, tmp_path, monkeypatch, capsys):
    with DataServer(_mirror(tmp_path), faults={"tiny/input.bin": "die"}) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
        assert server.requests == ["tiny/input.bin"]
    assert_user_error(rc, err, "tiny/input.bin", f"cannot download {server.url}/tiny/input.bin", "nothing saved")
    _assert_nothing_installed(cache)


def test_a_stalled_server_times_out(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "TIMEOUT_S", 0.5)
    with DataServer(_mirror(tmp_path), faults={"tiny/input.bin": "stall"}) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "tiny/input.bin", "timed out", "nothing saved")
    _assert_nothing_installed(cache)


def test_no_server_is_one_line(cache, tmp_path, monkeypatch, capsys):
    with DataServer(_mirror(tmp_path)) as server:
        url = server.url
    monkeypatch.setenv("QKV_DATA_URL", url)  # stopped: the port refuses connections
    rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "tiny/input.bin", "cannot download", "nothing saved")
    _assert_nothing_installed(cache)


def test_a_file_missing_on_the_mirror_is_one_line(cache, tmp_path, monkeypatch, capsys):
    root = _mirror(tmp_path)
    (root / "tiny" / "input.bin").unlink()
    with DataServer(root) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "tiny/input.bin", "404")
    _assert_nothing_installed(cache)


def test_a_failure_on_the_second_file_keeps_the_first_and_the_retry_fetches_only_the_rest(cache, tmp_path,
                                                                                         monkeypatch, capsys):
    with DataServer(_mirror(tmp_path), faults={"tiny/notes.txt": "die"}) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "tiny/notes.txt")
    assert _files(cache) == ["tiny", "tiny/input.bin"]  # a whole, checked file; the dataset is not complete
    with pytest.raises(QKVError, match="not available locally"):
        resolve("tiny", download=False)
    with DataServer(_mirror(tmp_path / "again")) as server:
        monkeypatch.setenv("QKV_DATA_URL", server.url)
        assert resolve("tiny") == cache / "tiny"
        assert server.requests == ["tiny/notes.txt"]
    assert verify("tiny") == [("input.bin", True), ("notes.txt", True)]


def test_a_temp_file_left_by_a_killed_download_is_cleared(cache, tmp_path, monkeypatch):
    (cache / "tiny").mkdir(parents=True)
    (cache / "tiny" / ".input.bin.abc123.part").write_bytes(PAYLOAD[:10])
    with DataServer(_mirror(tmp_path)) as server:
        resolve("tiny", base_url=server.url)
    assert _files(cache) == ["tiny", "tiny/input.bin", "tiny/notes.txt"]


def test_an_unwritable_cache_is_one_line(cache, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("QKV_CACHE_DIR", str(blocker / "cache"))
    rc, _, err = qkv(capsys, "data", "get", "tiny")
    assert_user_error(rc, err, "cannot create the cache folder")
