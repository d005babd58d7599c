"""`qkv explain self-vs-cross`: one MultiHeadAttention class; cross-attention's K/V inputs are the encoder output."""

import dataclasses
import json

import pytest

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import explain

SRC = "die drei eins vier ."


def _table(e):
    return next(b for b in e.blocks if b.kind == "table")


def test_translation_self_and_cross_attention_inputs(runs):
    run = runs["translate"]
    e = explain("self-vs-cross", run, src=SRC)
    assert all(c.ok for c in e.checks) and len(e.checks) == run.model.config.n_decoder_layers + 1, e.format_text()
    assert [c.max_abs_diff for c in e.checks[:-1]] == [0.0] * run.model.config.n_decoder_layers
    assert e.data["classes"] == ["MultiHeadAttention"]
    S, T = len(e.data["source"]), len(e.data["target"])
    assert e.data["source"][-1] == "<eos>" and e.data["target"][0] == "<bos>"
    rows = {row[0]: row for row in _table(e).rows}
    assert len(rows) == 1 + 2 * run.model.config.n_decoder_layers
    C = run.model.config.d_model
    assert rows["encoder 0 self-attention"][3:6] == [(1, S, C), "source states", (1, S, C)]
    assert rows["decoder 1 self-attention"][3:8] == [(1, T, C), "target states", (1, T, C), "x", "causal"]
    assert rows["decoder 1 cross-attention"][3:7] == [(1, T, C), "encoder output (memory)", (1, S, C), "x, memory"]
    assert e.figures[0].data["cross"].shape == (T, S) and e.figures[0].data["self"].shape == (T, T)


def test_gpt_shows_self_attention_and_says_cross_needs_a_translation(runs):
    e = explain("self-vs-cross", runs["lm"], text="<img src=x>")
    assert not e.data["cross"] and e.data["classes"] == ["MultiHeadAttention"]
    assert "Cross-attention needs an encoder-decoder run" in e.format_text()
    assert {row[4] for row in _table(e).rows} == {"text states"} and len(_table(e).rows) == 2
    assert e.figures[0].data["self"].shape == (11, 11)


def test_the_check_can_fail(runs, monkeypatch):
    import qkv.explain.self_vs_cross as topic

    real = topic.one_head
    monkeypatch.setattr(topic, "one_head",  # K and V from a memory that is off by 1e-3
                        lambda attn, call, h: real(attn, dataclasses.replace(call, context=call.context + 1e-3), h))
    e = explain("self-vs-cross", runs["translate"], src=SRC)
    assert not e.checks[-1].ok


def test_wrong_run_and_out_of_range_are_one_line_errors(runs):
    with pytest.raises(QKVError, match="layer 2 is out of range") as err:
        explain("self-vs-cross", runs["translate"], src=SRC, layer=2)
    assert "\n" not in str(err.value)
    with pytest.raises(QKVError, match="head 2 is out of range"):
        explain("self-vs-cross", runs["translate"], src=SRC, head=2)
    with pytest.raises(QKVError, match="explain self-vs-cross needs") as err:
        explain("self-vs-cross", runs["digits"])
    assert "\n" not in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "self-vs-cross", str(tiny_runs["translate"]), "--src", SRC]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    for c in (b for b in data["blocks"] if b["kind"] == "check"):
        assert f"{c['what']}: max |difference| {c['max_abs_diff']:.2e}" in text
    for row in next(b for b in data["blocks"] if b["kind"] == "table")["rows"]:
        assert row[0] in text and str(tuple(row[5])) in text
    (png,) = data["pngs"]
    assert (tmp_path / "self-vs-cross-attention.png").stat().st_size > 1000 and png.endswith("attention.png")
