"""Text corpora and the dataset registry: decoding checks, folders, random windows (resume, DDP),
full-pass windows, local lookup and sha256 verification (downloads: test_download.py, against a local server)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import english_text
from qkv.cli.main import main
from qkv.data.files import decode_text
from qkv.data.registry import DATASETS, resolve, verify
from qkv.data.text import RandomWindows, full_pass_windows, load_corpus
from qkv.errors import QKVError

REPO = Path(__file__).resolve().parents[3]
SHAKESPEARE_SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture
def no_local_data(monkeypatch, tmp_path) -> Path:
    """No local copies anywhere: QKV_DATA_DIR unset, an empty cache in tmp_path (returned)."""
    monkeypatch.delenv("QKV_DATA_DIR", raising=False)
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------------------
# decoding and corpora


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "x.txt: file is empty"),
        (b"  \n\t ", "x.txt: file is empty"),
        (b"ab\x00cd", r"x.txt: looks binary \(contains NUL bytes\)"),
        ("naïve".encode("latin-1"), r"x.txt: not UTF-8 text \(byte 0xef at offset 2\)"),
        (b"hello \xff\xfe", r"byte 0xff at offset 6"),
        ("€".encode()[:2] + b" rest", r"byte 0xe2 at offset 0"),  # a UTF-8 sequence cut short
    ],
)
def test_decode_text_errors(data, match):
    with pytest.raises(QKVError, match=match):
        decode_text(data, "x.txt")


def test_decode_text_accepts_utf8():
    assert decode_text("naïve — 日本 🙂\n".encode(), "x") == "naïve — 日本 🙂\n"


def test_load_corpus_reads_a_folder_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "a.md").write_text("ay", encoding="utf-8")
    (tmp_path / "sub" / "c.py").write_text("sea", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00\x00")  # not a text suffix: skipped
    assert load_corpus(str(tmp_path)) == "ay\n\nbee\n\nsea"
    assert load_corpus(str(tmp_path), max_chars=5) == "ay\n\nb"


def test_load_corpus_folder_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.bin").write_bytes(b"xyz")
    with pytest.raises(QKVError, match="no text files"):
        load_corpus(str(empty))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ok.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "bad" / "latin.txt").write_bytes("olé".encode("latin-1"))
    with pytest.raises(QKVError, match=r"latin.txt: not UTF-8 text \(byte 0xe9 at offset 2\)"):
        load_corpus(str(tmp_path / "bad"))


def test_load_corpus_unknown_source_lists_datasets(no_local_data):
    with pytest.raises(QKVError, match="no dataset or file named 'shakespear'; datasets: tinyshakespeare, pystdlib"):
        load_corpus("shakespear")


def _stand_in_copies(folder: Path) -> Path:
    """A folder laid out like $QKV_DATA_DIR holding every file of every dataset, made up (none has the right
    sha256): what the lookup needs, which checks files are there and leaves the hashes to `verify`."""
    for name, info in DATASETS.items():
        for f in info.files:
            (folder / name / f.name).parent.mkdir(parents=True, exist_ok=True)  # fsdd's files are in recordings/
            (folder / name / f.name).write_text(english_text(300, seed=len(f.name)), encoding="utf-8")
    return folder


def test_load_corpus_named_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_DATA_DIR", str(_stand_in_copies(tmp_path / "data")))
    text = load_corpus("tinyshakespeare", max_chars=100)
    assert text == english_text(300, seed=len("input.txt"))[:100]


# ---------------------------------------------------------------------------------------------------------
# random windows


def test_random_windows_shapes_and_shift():
    tokens = np.arange(1000, dtype=np.uint16)  # token i has value i, so a window is a run of consecutive ids
    b = RandomWindows(tokens, block_size=16, batch_size=5, seed=0).next_batch()
    x, y = b["idx"], b["targets"]
    assert set(b) == {"idx", "targets"}
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # every row is a contiguous window
    assert int(x.min()) >= 0 and int(y.max()) <= 999


def test_random_windows_state_dict_reproduces_the_batches():
    tokens = np.arange(500, dtype=np.uint16)
    a = RandomWindows(tokens, 8, 4, seed=1)
    for _ in range(3):
        a.next_batch()
    state = {k: v.clone() for k, v in a.state_dict().items()}
    expected = [a.next_batch() for _ in range(3)]
    b = RandomWindows(tokens, 8, 4, seed=99)  # a different seed: only the loaded state decides
    b.load_state_dict(state)
    for e, got in zip(expected, (b.next_batch() for _ in range(3)), strict=True):
        assert torch.equal(e["idx"], got["idx"]) and torch.equal(e["targets"], got["targets"])
    assert not torch.equal(RandomWindows(tokens, 8, 4, seed=99).next_batch()["idx"], expected[0]["idx"])


def test_random_windows_ddp_ranks_split_the_global_batch():
    tokens = np.arange(2000, dtype=np.uint16)
    full = RandomWindows(tokens, 8, 12, seed=3)
    ranks = [RandomWindows(tokens, 8, 12, seed=3, rank=r, world_size=3) for r in range(3)]
    for _ in range(4):
        whole = full.next_batch()
        parts = [w.next_batch() for w in ranks]
        assert all(p["idx"].shape == (4, 8) for p in parts)
        assert torch.equal(torch.cat([p["idx"] for p in parts]), whole["idx"])  # rank r holds rows 4r..4r+3
        assert torch.equal(torch.cat([p["targets"] for p in parts]), whole["targets"])


def test_random_windows_errors():
    with pytest.raises(QKVError, match="need more than block_size"):
        RandomWindows(np.arange(9, dtype=np.uint16), 8, 2, seed=0)
    with pytest.raises(QKVError, match="not divisible by the 3 processes"):
        RandomWindows(np.arange(100, dtype=np.uint16), 8, 4, seed=0, world_size=3)


# ---------------------------------------------------------------------------------------------------------
# full-pass windows


@pytest.mark.parametrize(("n", "block", "batch", "max_tokens"), [(101, 8, 3, None), (64, 8, 4, None),
                                                                 (50, 7, 2, 20), (9, 16, 4, None), (18, 8, 2, None)])
def test_full_pass_windows_cover_every_target_once(n, block, batch, max_tokens):
    tokens = np.arange(n, dtype=np.uint16)
    targets = []
    for b in full_pass_windows(tokens, block, batch, max_tokens):
        x, y = b["idx"], b["targets"]
        assert x.shape == y.shape and x.shape[0] <= batch and x.shape[1] <= block
        real = y != -100
        assert torch.equal(y[real], x[real] + 1)  # each target is the token after its input
        targets += y[real].tolist()
    last = n - 1 if max_tokens is None else min(n - 1, max_tokens)
    assert sorted(targets) == list(range(1, last + 1))  # every target once: no gaps, no overlaps


# ---------------------------------------------------------------------------------------------------------
# registry


def test_resolve_finds_the_local_copy_and_verifies_it(data_dir):
    assert resolve("tinyshakespeare") == data_dir / "tinyshakespeare"
    assert verify("tinyshakespeare") == [("input.txt", True)]
    assert DATASETS["tinyshakespeare"].files[0].sha256 == SHAKESPEARE_SHA


def test_verify_flags_a_modified_copy(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("First Citizen:\nnot quite\n", encoding="utf-8")
    monkeypatch.setenv("QKV_DATA_DIR", str(tmp_path))
    assert verify("tinyshakespeare") == [("input.txt", False)]


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(QKVError, match="unknown dataset 'shakespeare'; known: tinyshakespeare, pystdlib, multi30k"):
        resolve("shakespeare")


def test_resolve_without_download_says_how_to_get_it(no_local_data):
    with pytest.raises(QKVError, match="qkv data get tinyshakespeare"):
        resolve("tinyshakespeare", download=False)


# ---------------------------------------------------------------------------------------------------------
# `qkv data`


def test_cli_data_list(tmp_path, monkeypatch, capsys):
    data_dir = _stand_in_copies(tmp_path / "data")
    monkeypatch.setenv("QKV_DATA_DIR", str(data_dir))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert name in out
    assert str(data_dir / "tinyshakespeare") in out
    assert str(data_dir / "multi30k") in out
    assert "local (" in out  # pystdlib: counted, never downloaded


def test_cli_data_list_says_not_downloaded(no_local_data, capsys):
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out.count("not downloaded") == 4  # tinyshakespeare, multi30k, fsdd and humaneval


def test_cli_data_get_verifies(data_dir, capsys):
    assert main(["data", "get", "tinyshakespeare"]) == 0
    assert capsys.readouterr().out.strip() == f"ok  sha256  {data_dir / 'tinyshakespeare' / 'input.txt'}"


def test_cli_data_get_fails_on_a_modified_copy(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("First Citizen:\nnot quite\n", encoding="utf-8")
    monkeypatch.setenv("QKV_DATA_DIR", str(tmp_path))
    assert main(["data", "get", "tinyshakespeare"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("BAD sha256")
    assert err.strip().count("\n") == 0 and "sha256" in err and "input.txt" in err
