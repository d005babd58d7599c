"""The run directory's files: atomic writes (a crash leaves the old file, never half a new one, and no
temporary file), and one-line errors for a run directory that is missing, not a run, or damaged."""

import json
import os

import pytest
import torch

from qkv.errors import QKVError
from qkv.runs import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    file_step,
    load_tensors,
    read_config,
)


def test_atomic_writes_leave_only_the_target(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "b.json", {"x": 1})
    atomic_save_tensors(tmp_path / "c.safetensors", {"w": torch.ones(2)}, metadata={"step": "3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.safetensors"]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("writer", ["bytes", "tensors"])
def test_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, writer):
    target = tmp_path / ("a.bin" if writer == "bytes" else "a.safetensors")
    target.write_bytes(b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        if writer == "bytes":
            atomic_write_bytes(target, b"new")
        else:
            atomic_save_tensors(target, {"w": torch.zeros(3)})
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_read_config_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(QKVError, match="run directory not found"):
        read_config(tmp_path / "nope")
    with pytest.raises(QKVError, match=f"file not found: .*{CONFIG_FILE}"):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(QKVError, match="malformed JSON"):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"model": {}}))
    with pytest.raises(QKVError, match="not a qkv run config"):
        read_config(tmp_path)


def test_tensors_and_their_step_stamp(tmp_path):
    path = tmp_path / WEIGHTS_FILE
    with pytest.raises(QKVError, match="no model.safetensors"):
        load_tensors(path)
    atomic_save_tensors(path, {"w": torch.arange(3.0)}, metadata={"step": "7"})
    assert file_step(path) == 7 and torch.equal(load_tensors(path)["w"], torch.arange(3.0))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(QKVError, match="cannot read safetensors file"):
        load_tensors(path)
    with pytest.raises(QKVError, match="unreadable checkpoint file"):
        file_step(path)


def test_only_this_module_spells_the_run_files():
    """Every file name of a run directory is a constant of qkv.runs: no other module spells one. (The
    Hugging Face converter names HF's own files, which happen to share two of the names.)"""
    from pathlib import Path

    import qkv.runs as runs

    names = [v for k, v in vars(runs).items() if k.isupper() and isinstance(v, str) and "." in v]
    src = Path(runs.__file__).parent
    hf = {"models/convert.py": {"config.json", "model.safetensors"}}
    offenders = [f"{p.relative_to(src)}: {n}" for p in src.rglob("*.py") if p.name != "runs.py"
                 for n in names if f'"{n}"' in p.read_text(encoding="utf-8")
                 and n not in hf.get(str(p.relative_to(src)), set())]
    assert not offenders, offenders
