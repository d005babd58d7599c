"""`qkv explain positions`: token rows + positional rows are the first block's input (learned, sinusoidal with
√d, RoPE and none), and one token at two positions enters as two different rows only when positions are added."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import explain
from qkv.models.gpt import GPT
from qkv.models.io import save_run
from qkv.nn.positional import rope_angles
from qkv.tasks import load_run


@pytest.fixture(scope="module")
def unadded(runs, tmp_path_factory) -> dict:
    """pos_encoding -> an (untrained) GPT run like the tiny lm run, with RoPE or with no positions."""
    lm = runs["lm"]
    out = {}
    for kind in ("rope", "none"):
        cfg = dataclasses.replace(lm.model.config, pos_encoding=kind)
        path = save_run(tmp_path_factory.mktemp(kind), GPT(cfg), tokenizer=lm.tokenizer, extra_config={"task": "lm"})
        out[kind] = load_run(path)
    return out


def test_learned_positions_are_added_and_tell_a_repeated_token_apart(runs):
    run = runs["lm"]
    e = explain("positions", run, text="<img src=x onerror")
    assert [c.ok for c in e.checks] == [True]
    ids = run.tokenizer.encode("<img src=x onerror")
    assert e.data["ids"] == ids and e.data["pos_encoding"] == "learned"
    signal = next(b for b in e.blocks if b.kind == "tensor" and b.name == "pos_emb(positions)")
    assert torch.equal(signal.value, run.model.pos_emb.weight[: len(ids)])
    pair = e.data["pair"]
    a, b = pair["positions"]
    assert ids[a] == ids[b] == pair["id"] and ids.index(pair["id"]) == a
    assert pair["token_l2"] == 0 and pair["token_cosine"] == pytest.approx(1.0)
    w = run.model.pos_emb.weight
    assert pair["input_l2"] == pytest.approx((w[a] - w[b]).norm().item(), rel=1e-5) and pair["input_cosine"] < 1


def test_sinusoidal_positions_follow_the_scaled_source_rows(runs):
    run = runs["translate"]
    e = explain("positions", run, src="drei eins drei")
    assert [c.ok for c in e.checks] == [True]
    assert e.data["pos_encoding"] == "sinusoidal" and e.data["token_scale"] == pytest.approx(math.sqrt(32))
    a, b = e.data["pair"]["positions"]
    table = run.model.pos_emb.table
    assert e.data["pair"]["input_l2"] == pytest.approx((table[a] - table[b]).norm().item(), rel=1e-4)
    assert "src_emb(ids)·√d + pos_emb(positions)" in e.format_text()


@pytest.mark.parametrize("kind", ["rope", "none"])
def test_rope_and_none_add_nothing(unadded, kind):
    run = unadded[kind]
    e = explain("positions", run, text="<img")
    assert [c.ok for c in e.checks] == [True]
    assert e.data["pair"]["input_l2"] == 0  # '<img' + its first token appended: the same input row twice
    assert "appended" in e.format_text()
    tensors = {b.name: b.value for b in e.blocks if b.kind == "tensor"}
    assert "pos_emb(positions)" not in tensors
    if kind == "rope":
        cos, sin = rope_angles(torch.arange(5), run.model.config.head_dim)
        assert torch.equal(tensors["cos(angles)"], cos) and torch.equal(tensors["sin(angles)"], sin)
        assert "never added to X" in e.format_text()
        assert [f.name for f in e.figures] == ["table"]
    else:
        assert e.figures == []


def test_dropout_in_training_mode_breaks_the_check(runs, monkeypatch):
    monkeypatch.setattr(runs["lm"].model, "drop", nn.Dropout(0.5))  # a new module is in training mode
    e = explain("positions", runs["lm"], text="<img src")
    assert not e.checks[0].ok and "TRAINING mode" in e.format_text()


def test_a_diffusion_run_is_a_one_line_error(runs):
    with pytest.raises(QKVError) as err:
        explain("positions", runs["digits"])
    assert "needs" in str(err.value) and "\n" not in str(err.value)


def test_json_and_text_agree_and_the_table_is_drawn(tiny_runs, tmp_path, capsys):
    args = ["explain", "positions", str(tiny_runs["translate"]), "--src", "drei eins drei"]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    pair = data["data"]["pair"]
    line = next(line for line in text.splitlines() if line.strip().startswith("input row X["))
    assert float(line.split()[-2]) == pytest.approx(pair["input_cosine"], abs=1e-3)
    assert float(line.split()[-1]) == pytest.approx(pair["input_l2"], abs=1e-3)
    check = next(b for b in data["blocks"] if b["kind"] == "check")
    assert check["ok"] and f"{check['max_abs_diff']:.2e}" in text
    assert data["figures"][0]["data"]["positions"] == 48  # min(64, the context of the run)
    png = tmp_path / "positions-table.png"
    assert data["pngs"] == [str(png)] and png.stat().st_size > 1000
